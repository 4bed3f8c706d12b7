"""Serves a policy to robots over websockets: a training checkpoint, an exported model, or the env's default.

    uv run scripts/serve_policy.py --env LIBERO --default_prompt "my task"           # the env's default pi0
    uv run scripts/serve_policy.py --env DROID policy:default --policy.model-type PI05  # ... its pi0.5 (or PI0_FAST)
    uv run scripts/serve_policy.py --env ALOHA_SIM policy:checkpoint --policy.config=pi0_aloha_sim \\
        --policy.dir=checkpoints/pi0_aloha_sim/exp_name/10000
    uv run scripts/serve_policy.py --env ALOHA policy:exported --policy.dir=s3://openpi-assets/exported/pi0_aloha/model
"""

from __future__ import annotations

import dataclasses
import enum
import logging

import tyro

from openpi import transforms as _transforms
from openpi.models import model as _model
from openpi.policies import aloha_policy
from openpi.policies import calvin_policy
from openpi.policies import droid_policy
from openpi.policies import exported as _exported
from openpi.policies import libero_policy
from openpi.policies import policy as _policy
from openpi.policies import policy_config as _policy_config
from openpi.serving import websocket_policy_server
from openpi.shared import compilation_cache
from openpi.training import config as _config
from openpi_client import base_policy as _base_policy


class EnvMode(enum.Enum):
    """Supported environments (robots)."""

    ALOHA = "aloha"
    ALOHA_SIM = "aloha_sim"
    DROID = "droid"
    CALVIN = "calvin"
    LIBERO = "libero"


@dataclasses.dataclass
class Checkpoint:
    """Load a policy from a training checkpoint."""

    # Training config name (e.g. "pi0_aloha_sim"); it defines the data transforms.
    config: str
    # Checkpoint directory, local or s3:// / gs:// (e.g. "checkpoints/pi0_aloha_sim/exp/10000").
    dir: str


@dataclasses.dataclass
class Exported:
    """Load an exported model (pi0, pi0.5 or pi0-FAST); the data transforms are the env's default policy's."""

    # Exported model directory, local or s3:// / gs:// (e.g. "s3://openpi-assets/exported/pi0_aloha/model").
    dir: str
    # Processor whose norm stats to use. Default: the env's default processor if the model has it, else the
    # model's only processor; with several and none chosen, the error lists them.
    processor: str | None = None


@dataclasses.dataclass
class Default:
    """Serve the env's default checkpoint of a model family (see DEFAULT_CHECKPOINTS)."""

    # Model family. PI0: every env's pi0 checkpoint. PI05 (pi0.5): pi05_droid (DROID), pi05_libero (LIBERO),
    # pi05_aloha on pi05_base (ALOHA). PI0_FAST (pi0-FAST): pi0_fast_droid (DROID), pi0_fast_libero (LIBERO).
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

    # Refuse connections without this key (`Api-Key` header); None accepts all.
    api_key: str | None = None
    # Most observations of concurrent clients combined into one model call. On a GPU, full pi0 serves 8 clients
    # 2.6x faster batched; on a CPU a large model is compute-bound and batch 8 costs more per observation than
    # batch 1 (dummy pi0: 0.81x), so use 1 there; small models gain on both (bench/RESULTS.md).
    max_batch_size: int = 8
    # Longest a request waits for others to share its model call, in milliseconds.
    max_wait_ms: float = 5.0
    # Largest request frame accepted, in bytes; None: no limit.
    max_frame_bytes: int | None = None

    # How to load the policy; without a subcommand, the env's default pi0 checkpoint (`policy:default
    # --policy.model-type PI05` or `PI0_FAST` picks the env's pi0.5 or pi0-FAST one instead).
    policy: Checkpoint | Exported | Default = dataclasses.field(default_factory=Default)


# The checkpoint each env serves when no policy is given, per model family (`policy:default --policy.model-type`).
# pi0 is the default family; pi0.5 and pi0-FAST have checkpoints for some envs only.
DEFAULT_CHECKPOINTS: dict[_model.ModelType, dict[EnvMode, Checkpoint]] = {
    _model.ModelType.PI0: {
        EnvMode.ALOHA: Checkpoint(config="pi0_aloha", dir="s3://openpi-assets/checkpoints/pi0_base"),
        EnvMode.ALOHA_SIM: Checkpoint(config="pi0_aloha_sim", dir="s3://openpi-assets/checkpoints/pi0_aloha_sim"),
        EnvMode.DROID: Checkpoint(config="pi0_droid", dir="s3://openpi-assets/checkpoints/pi0_droid"),
        EnvMode.CALVIN: Checkpoint(config="pi0_calvin", dir="s3://openpi-assets/checkpoints/pi0_calvin"),
        EnvMode.LIBERO: Checkpoint(config="pi0_libero", dir="s3://openpi-assets/checkpoints/pi0_libero"),
    },
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


def default_checkpoint(env: EnvMode, model_type: _model.ModelType = _model.ModelType.PI0) -> Checkpoint:
    """The env's default checkpoint of `model_type`; the error lists the envs that family has one for."""
    checkpoints = DEFAULT_CHECKPOINTS[model_type]
    if env not in checkpoints:
        available = ", ".join(mode.name for mode in checkpoints)
        raise ValueError(
            f"--policy.model-type {model_type.name}: no default checkpoint for --env {env.name}; this family has "
            f"one for {available}. Serve another checkpoint with policy:checkpoint --policy.config=... --policy.dir=..."
        )
    return checkpoints[env]


# The exported models of the README (name → directory).
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

# Each env's exported model and its processor (the default for `policy:exported --policy.processor`).
DEFAULT_EXPORTED: dict[EnvMode, Exported] = {
    EnvMode.ALOHA: Exported(dir=EXPORTED_MODELS["pi0_aloha"], processor="trossen_biarm_single_base_cam_24dim"),
    EnvMode.ALOHA_SIM: Exported(dir=EXPORTED_MODELS["pi0_aloha_sim"], processor="huggingface_aloha_sim_transfer_cube"),
    EnvMode.DROID: Exported(dir=EXPORTED_MODELS["pi0_droid"], processor="openx_droid"),
    EnvMode.CALVIN: Exported(dir=EXPORTED_MODELS["pi0_calvin"], processor="calvin"),
    EnvMode.LIBERO: Exported(dir=EXPORTED_MODELS["pi0_libero"], processor="libero"),
}


_ALOHA_DELTA_MASK = _transforms.make_bool_mask(6, -1, 6, -1)


def env_data_transforms(
    env: EnvMode, model_type: _model.ModelType = _model.ModelType.PI0, model_action_dim: int | None = None
) -> _transforms.Group:
    """The robot transforms of the env's default policy for a model family, used with exported models.

    The cameras go to the family's slots; pi0-FAST, which has no padding model transform, pads the state to
    `model_action_dim` here, as its train configs do. The exported ALOHA model acts in joint deltas (grippers
    absolute); all ALOHA models act in the pi runtime's joint space (`adapt_to_pi`).
    """
    action_dim = model_action_dim if model_type == _model.ModelType.PI0_FAST else None
    match env:
        case EnvMode.ALOHA:
            return _transforms.Group(
                inputs=[aloha_policy.AlohaInputs(action_dim=action_dim), _transforms.DeltaActions(_ALOHA_DELTA_MASK)],
                outputs=[_transforms.AbsoluteActions(_ALOHA_DELTA_MASK), aloha_policy.AlohaOutputs()],
            )
        case EnvMode.ALOHA_SIM:
            return _transforms.Group(
                inputs=[aloha_policy.AlohaInputs(action_dim=action_dim)], outputs=[aloha_policy.AlohaOutputs()]
            )
        case EnvMode.DROID:
            return _transforms.Group(
                inputs=[droid_policy.DroidInputs(action_dim=action_dim, model_type=model_type)],
                outputs=[droid_policy.DroidOutputs()],
            )
        case EnvMode.CALVIN:
            return _transforms.Group(
                inputs=[calvin_policy.CalvinInputs(action_dim=action_dim)], outputs=[calvin_policy.CalvinOutputs()]
            )
        case EnvMode.LIBERO:
            return _transforms.Group(
                inputs=[libero_policy.LiberoInputs(action_dim=action_dim, model_type=model_type)],
                outputs=[libero_policy.LiberoOutputs()],
            )
    raise ValueError(f"env: expected one of {[mode.name for mode in EnvMode]}, got {env!r}")


def create_policy(args: Args) -> _policy.Policy:
    """The policy `args` describe."""
    match args.policy:
        case Checkpoint(config=config_name, dir=checkpoint_dir):
            return _policy_config.create_trained_policy(
                _config.get_config(config_name), checkpoint_dir, default_prompt=args.default_prompt
            )
        case Exported(dir=exported_dir, processor=processor):
            model = _exported.ExportedModel.load(exported_dir)
            return _policy_config.create_exported_policy(
                model,
                data_transforms=env_data_transforms(args.env, model.model_type, model.action_dim),
                processor=processor,
                default_processor=DEFAULT_EXPORTED[args.env].processor,
                default_prompt=args.default_prompt,
            )
        case Default(model_type=model_type):
            checkpoint = default_checkpoint(args.env, model_type)
            return _policy_config.create_trained_policy(
                _config.get_config(checkpoint.config), checkpoint.dir, default_prompt=args.default_prompt
            )
    raise TypeError(f"policy: expected checkpoint, exported or default, got {args.policy!r}")


def main(args: Args) -> None:
    compilation_cache.enable()
    policy: _base_policy.BasePolicy = create_policy(args)
    metadata = policy.metadata
    if args.record:
        policy = _policy.PolicyRecorder(policy, "policy_records")
    server = websocket_policy_server.WebsocketPolicyServer(
        policy,
        host="0.0.0.0",
        port=args.port,
        metadata=metadata,
        api_key=args.api_key,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_frame_bytes=args.max_frame_bytes,
    )
    server.serve_forever()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
