"""Serves a policy to robots over websockets: a training checkpoint, an exported model, or the env's default.

    uv run scripts/serve_policy.py --env LIBERO --default_prompt "my task"           # the env's exported pi0 model
    uv run scripts/serve_policy.py --env DROID policy:default --policy.model-type PI05  # its pi0.5 checkpoint
    uv run scripts/serve_policy.py --env ALOHA_SIM policy:checkpoint --policy.config=pi0_aloha_sim \\
        --policy.dir=checkpoints/pi0_aloha_sim/exp_name/10000
    uv run scripts/serve_policy.py --env ALOHA policy:exported --policy.dir=s3://openpi-assets/exported/pi0_aloha/model
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import enum
import functools
import logging
import ssl
from typing import Any

import tyro

from openpi import transforms as _transforms
from openpi.models import model as _model
from openpi.policies import exported as _exported
from openpi.policies import policy as _policy
from openpi.policies import policy_config as _policy_config
from openpi.policies import robots
from openpi.policies import ur5_policy
from openpi.serving import warmup as _warmup
from openpi.serving import websocket_policy_server
from openpi.shared import accelerator
from openpi.shared import compilation_cache
from openpi.training import config as _config
from openpi_client import base_policy as _base_policy


class EnvMode(enum.Enum):
    """Supported environments (robots). Each value names its robot record in `openpi.policies.robots.ROBOTS`, whose
    transforms serve it, unless `create_default_policy` has a case for it."""

    ALOHA = "aloha"
    ALOHA_SIM = "aloha_sim"
    DROID = "droid"
    CALVIN = "calvin"
    LIBERO = "libero"
    # The README guide's own robot: a UR5e arm with a gripper, a base and a wrist camera.
    UR5 = "ur5"


@dataclasses.dataclass
class Checkpoint:
    """Load a policy from a training checkpoint."""

    # Training config name (e.g. "pi0_aloha_sim"); it defines the data transforms.
    config: str
    # Checkpoint directory, local or s3:// / gs:// (e.g. "checkpoints/pi0_aloha_sim/exp/10000").
    dir: str


@dataclasses.dataclass
class Exported:
    """Load an exported model (pi0, pi0.5 or pi0-FAST); the data transforms are the env's (`create_default_policy`)."""

    # Exported model directory, local or s3:// / gs:// (e.g. "s3://openpi-assets/exported/pi0_aloha/model").
    dir: str
    # Processor whose norm stats to use. Default: the env's default processor if the model has it, else the
    # model's only processor; with several and none chosen, the error lists them.
    processor: str | None = None


@dataclasses.dataclass
class Default:
    """Serve the env's default policy: its exported pi0 model of the README's table (DEFAULT_EXPORTED), or with
    --policy.model-type PI05 / PI0_FAST its pi0.5 / pi0-FAST checkpoint (DEFAULT_CHECKPOINTS)."""

    # Model family. PI0: the env's exported model (pi0_aloha, pi0_aloha_sim, pi0_droid, pi0_calvin, pi0_libero).
    # PI05 (pi0.5): pi05_droid (DROID), pi05_libero (LIBERO), pi05_aloha on pi05_base (ALOHA).
    # PI0_FAST (pi0-FAST): pi0_fast_droid (DROID), pi0_fast_libero (LIBERO).
    model_type: _model.ModelType = _model.ModelType.PI0


@dataclasses.dataclass
class Args:
    """Arguments of serve_policy."""

    # Environment to serve the policy for: picks the default policy and the data transforms of exported models.
    env: EnvMode = EnvMode.ALOHA_SIM
    # Prompt used when an observation has none.
    default_prompt: str | None = None
    # Port to serve on.
    port: int = 8000
    # Save every request and response to ./policy_records (for debugging).
    record: bool = False

    # Refuse connections (and GET /metrics) without this key (`Api-Key` header); None accepts all. Over plain ws://
    # the key travels in clear text: serve wss:// (--tls-cert, --tls-key) when robots reach the server over a network.
    api_key: str | None = None
    # PEM certificate (chain) to serve wss:// and HTTPS with; needs --tls-key. Without both: plain ws://.
    tls_cert: str | None = None
    # PEM private key of --tls-cert.
    tls_key: str | None = None
    # Most observations of concurrent clients combined into one model call. On a GPU, full pi0 serves 8 clients
    # 2.6x faster batched; on a CPU a large model is compute-bound and batch 8 costs more per observation than
    # batch 1 (dummy pi0: 0.81x), so use 1 there; small models gain on both (bench/RESULTS.md).
    max_batch_size: int = 8
    # Longest a request waits for others to share its model call, in milliseconds.
    max_wait_ms: float = 5.0
    # Largest request frame accepted, in bytes (a 3-camera observation is about 450 kB); None: no limit. A bigger
    # frame closes only its own connection, with code 1009.
    max_frame_bytes: int | None = websocket_policy_server.DEFAULT_MAX_FRAME_BYTES
    # Longest a client may take over its TLS and websocket handshakes, in seconds.
    handshake_timeout_s: float = websocket_policy_server.DEFAULT_HANDSHAKE_TIMEOUT_S
    # Most robots connected at once; one more is refused with HTTP 503.
    max_connections: int = websocket_policy_server.DEFAULT_MAX_CONNECTIONS

    # Serve a checkpoint that carries no norm stats (assets/<asset_id>/norm_stats.json) unnormalized instead of
    # refusing it. Configs without an asset id (trained on random data, e.g. debug_fake) never have any and serve
    # unnormalized without this flag.
    allow_unnormalized: bool = False
    # Run on the CPU although an NVIDIA GPU is visible (JAX installed without CUDA); without it the server stops
    # at start and names the fix (`uv sync --extra cuda`, or `--extra cuda13` for CUDA 13 drivers).
    allow_cpu: bool = False
    # Serve at once, without the warm-up. By default the policy first runs at every batch size the server can form,
    # with and without the real-time chunking keys, so that no robot waits for a compilation mid-episode; /healthz
    # answers 503 "warming up" until then. Compiled programs are kept in the persistent compilation cache
    # ($JAX_COMPILATION_CACHE_DIR, default $OPENPI_DATA_HOME/jax_compilation_cache): a restart warms up faster.
    skip_warmup: bool = False

    # How to load the policy. Without a subcommand: the env's exported pi0 model of the README's table; `policy:default
    # --policy.model-type PI05` or `PI0_FAST` serves the env's pi0.5 or pi0-FAST checkpoint instead.
    policy: Checkpoint | Exported | Default = dataclasses.field(default_factory=Default)


# The README's exported models (name → directory); all are pi0.
EXPORTED_MODELS: dict[str, str] = {
    name: f"s3://openpi-assets/exported/{name}/model"
    for name in (
        "pi0_base",
        "pi0_aloha",
        "pi0_aloha_towel",
        "pi0_aloha_sim",
        "pi0_droid",
        "pi0_calvin",
        "pi0_libero",
    )
}

# Each env's default policy, an exported model of the README's table, and its processor (also the default of
# `policy:exported --policy.processor`). A robot pi0 was not trained on (e.g. UR5) has none.
DEFAULT_EXPORTED: dict[EnvMode, Exported] = {
    EnvMode.ALOHA: Exported(dir=EXPORTED_MODELS["pi0_aloha"], processor="trossen_biarm_single_base_cam_24dim"),
    EnvMode.ALOHA_SIM: Exported(dir=EXPORTED_MODELS["pi0_aloha_sim"], processor="huggingface_aloha_sim_transfer_cube"),
    EnvMode.DROID: Exported(dir=EXPORTED_MODELS["pi0_droid"], processor="openx_droid"),
    EnvMode.CALVIN: Exported(dir=EXPORTED_MODELS["pi0_calvin"], processor="calvin"),
    EnvMode.LIBERO: Exported(dir=EXPORTED_MODELS["pi0_libero"], processor="libero"),
}

# The checkpoints of the families without exported models (`policy:default --policy.model-type`), per env.
DEFAULT_CHECKPOINTS: dict[_model.ModelType, dict[EnvMode, Checkpoint]] = {
    _model.ModelType.PI05: {
        EnvMode.ALOHA: Checkpoint(config="pi05_aloha", dir="s3://openpi-assets/checkpoints/pi05_base"),
        EnvMode.DROID: Checkpoint(config="pi05_droid", dir="s3://openpi-assets/checkpoints/pi05_droid"),
        EnvMode.LIBERO: Checkpoint(config="pi05_libero", dir="s3://openpi-assets/checkpoints/pi05_libero"),
    },
    _model.ModelType.PI0_FAST: {
        EnvMode.DROID: Checkpoint(config="pi0_fast_droid", dir="s3://openpi-assets/checkpoints/pi0_fast_droid"),
        EnvMode.LIBERO: Checkpoint(config="pi0_fast_libero", dir="s3://openpi-assets/checkpoints/pi0_fast_libero"),
    },
}

_SERVE_A_CHECKPOINT = "Serve a checkpoint with policy:checkpoint --policy.config=... --policy.dir=..."


def default_exported(env: EnvMode) -> Exported:
    """The env's exported model; the error lists the envs that have one."""
    if env not in DEFAULT_EXPORTED:
        available = ", ".join(mode.name for mode in DEFAULT_EXPORTED)
        raise ValueError(
            f"--env {env.name}: no default exported model (the README's table has models for {available}). "
            f"{_SERVE_A_CHECKPOINT}, or an exported model with policy:exported --policy.dir=..."
        )
    return DEFAULT_EXPORTED[env]


def default_checkpoint(env: EnvMode, model_type: _model.ModelType) -> Checkpoint:
    """The env's default checkpoint of `model_type` (PI05 or PI0_FAST); the error lists the envs it has one for."""
    checkpoints = DEFAULT_CHECKPOINTS.get(model_type, {})
    if env not in checkpoints:
        available = ", ".join(mode.name for mode in checkpoints) or "no env"
        raise ValueError(
            f"--policy.model-type {model_type.name}: no default checkpoint for --env {env.name}; this family has "
            f"one for {available}. {_SERVE_A_CHECKPOINT}"
        )
    return checkpoints[env]


# The envs whose exported models act in deltas of the state on their robot's delta-action mask (pi0_aloha: joints
# relative, grippers absolute); the others' act in absolute actions.
DELTA_ACTION_ENVS = frozenset({EnvMode.ALOHA})


def create_default_policy(
    env: EnvMode, *, default_prompt: str | None = None, exported: Exported | None = None
) -> _policy.Policy:
    """The policy of an exported model for `env`: `exported`, else the env's model of DEFAULT_EXPORTED.

    Norm stats come from a processor of the model (`exported.processor`, else the env's default processor of
    DEFAULT_EXPORTED if the model has it, else its only one); the robot transforms from the env's robot record
    (`openpi.policies.robots`), as in the original: they pad the state to the model's action dim before normalization
    (dims beyond the stats stay zero), fill the camera slots of the model type where the robot's inputs take one
    (DROID, LIBERO), and take actions as deltas for the envs of DELTA_ACTION_ENVS. An env may instead build its
    transforms in a case below, as the README guide's UR5 does (pi0-style camera slots). Without `default_prompt`,
    the robot's default prompt applies.
    """
    robot = robots.ROBOTS.get(env.value)
    if default_prompt is None and robot is not None:
        default_prompt = robot.default_prompt
    processor = exported.processor if exported else None
    default_processor = DEFAULT_EXPORTED[env].processor if env in DEFAULT_EXPORTED else None
    model = _exported.ExportedModel.load((exported or default_exported(env)).dir)

    def make_policy_config(
        input_layers: Sequence[_transforms.DataTransformFn],
        output_layers: Sequence[_transforms.DataTransformFn],
        sample_kwargs: dict[str, Any] | None = None,
    ) -> _policy_config.PolicyConfig:
        """`model` with the robot's input transforms (`input_layers`) and output transforms (`output_layers`)."""
        return _policy_config.make_exported_policy_config(
            model,
            data_transforms=_transforms.Group(inputs=input_layers, outputs=output_layers),
            processor=processor,
            default_processor=default_processor,
            default_prompt=default_prompt,
            sample_kwargs=sample_kwargs,
        )

    match env:
        case EnvMode.UR5:
            config = make_policy_config(
                input_layers=[
                    ur5_policy.UR5Inputs(action_dim=model.action_dim),
                ],
                output_layers=[
                    ur5_policy.UR5Outputs(),
                ],
            )
        case _:
            if robot is None:
                raise ValueError(
                    f"--env {env.name}: no robot record {env.value!r} in openpi.policies.robots.ROBOTS (it has "
                    f"{sorted(robots.ROBOTS)}) and no case in create_default_policy"
                )
            robot_transforms = robot.data_transforms(
                model.action_dim, model.model_type, delta_actions=env in DELTA_ACTION_ENVS
            )
            config = make_policy_config(input_layers=robot_transforms.inputs, output_layers=robot_transforms.outputs)

    return _policy_config.create_policy(config)


def create_policy(args: Args) -> _policy.Policy:
    """The policy `args` describe."""
    match args.policy:
        case Checkpoint(config=config_name, dir=checkpoint_dir):
            return _policy_config.create_trained_policy(
                _config.get_config(config_name),
                checkpoint_dir,
                default_prompt=args.default_prompt,
                allow_unnormalized=args.allow_unnormalized,
            )
        case Exported():
            return create_default_policy(args.env, default_prompt=args.default_prompt, exported=args.policy)
        case Default(model_type=_model.ModelType.PI0):
            return create_default_policy(args.env, default_prompt=args.default_prompt)
        case Default(model_type=model_type):
            checkpoint = default_checkpoint(args.env, model_type)
            return _policy_config.create_trained_policy(
                _config.get_config(checkpoint.config),
                checkpoint.dir,
                default_prompt=args.default_prompt,
                allow_unnormalized=args.allow_unnormalized,
            )
    raise TypeError(f"policy: expected checkpoint, exported or default, got {args.policy!r}")


def tls_context(args: Args) -> ssl.SSLContext | None:
    """The server's TLS context from --tls-cert and --tls-key (both or neither); raises naming the flag at fault."""
    if (args.tls_cert is None) != (args.tls_key is None):
        given, missing = ("--tls-cert", "--tls-key") if args.tls_key is None else ("--tls-key", "--tls-cert")
        raise ValueError(f"{missing}: required with {given} (serving wss:// needs the certificate and its key)")
    if args.tls_cert is None or args.tls_key is None:
        return None
    return websocket_policy_server.load_tls_context(args.tls_cert, args.tls_key)


def main(args: Args) -> None:
    ssl_context = tls_context(args)  # before loading the policy: a bad certificate fails in a second, not minutes
    accelerator.ensure_gpu_used(allow_cpu=args.allow_cpu)
    logging.info("Persistent compilation cache: %s", compilation_cache.enable())
    policy: _base_policy.BasePolicy = create_policy(args)
    metadata = policy.metadata
    # The policy itself, not a recorder of it: warm-up calls are not robot steps.
    warmup = None if args.skip_warmup else functools.partial(_warmup.warm_up, policy, robot=args.env.value)
    if args.record:
        policy = _policy.PolicyRecorder(policy, "policy_records")
    server = websocket_policy_server.WebsocketPolicyServer(
        policy,
        host="0.0.0.0",
        port=args.port,
        metadata=metadata,
        api_key=args.api_key,
        ssl_context=ssl_context,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_frame_bytes=args.max_frame_bytes,
        handshake_timeout_s=args.handshake_timeout_s,
        max_connections=args.max_connections,
        warmup=warmup,
    )
    server.serve_forever()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
