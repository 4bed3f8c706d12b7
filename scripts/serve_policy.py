"""Serves a policy to robots over websockets: a training checkpoint, an exported model, or the env's default.

    uv run scripts/serve_policy.py --env LIBERO --default_prompt "my task"
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
from openpi.policies import aloha_policy
from openpi.policies import calvin_policy
from openpi.policies import droid_policy
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
    """Load an exported model; the data transforms are the env's default policy's."""

    # Exported model directory, local or s3:// / gs:// (e.g. "s3://openpi-assets/exported/pi0_aloha/model").
    dir: str
    # Processor whose norm stats to use. Default: the env's default processor if the model has it, else the
    # model's only processor; with several and none chosen, the error lists them.
    processor: str | None = None


@dataclasses.dataclass
class Default:
    """Serve the env's default checkpoint (see DEFAULT_CHECKPOINT)."""


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

    # How to load the policy; without a subcommand, the env's default checkpoint.
    policy: Checkpoint | Exported | Default = dataclasses.field(default_factory=Default)


# The policy each env serves when no policy is given.
DEFAULT_CHECKPOINT: dict[EnvMode, Checkpoint] = {
    EnvMode.ALOHA: Checkpoint(config="pi0_aloha", dir="s3://openpi-assets/checkpoints/pi0_base"),
    EnvMode.ALOHA_SIM: Checkpoint(config="pi0_aloha_sim", dir="s3://openpi-assets/checkpoints/pi0_aloha_sim"),
    EnvMode.DROID: Checkpoint(config="pi0_droid", dir="s3://openpi-assets/checkpoints/pi0_droid"),
    EnvMode.CALVIN: Checkpoint(config="pi0_calvin", dir="s3://openpi-assets/checkpoints/pi0_calvin"),
    EnvMode.LIBERO: Checkpoint(config="pi0_libero", dir="s3://openpi-assets/checkpoints/pi0_libero"),
}

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

# The robot transforms of each env's default policy, used with exported models. The exported ALOHA model acts in
# joint deltas (grippers absolute); all ALOHA models act in the pi runtime's joint space (`adapt_to_pi`).
ENV_DATA_TRANSFORMS: dict[EnvMode, _transforms.Group] = {
    EnvMode.ALOHA: _transforms.Group(
        inputs=[aloha_policy.AlohaInputs(), _transforms.DeltaActions(_ALOHA_DELTA_MASK)],
        outputs=[_transforms.AbsoluteActions(_ALOHA_DELTA_MASK), aloha_policy.AlohaOutputs()],
    ),
    EnvMode.ALOHA_SIM: _transforms.Group(inputs=[aloha_policy.AlohaInputs()], outputs=[aloha_policy.AlohaOutputs()]),
    EnvMode.DROID: _transforms.Group(inputs=[droid_policy.DroidInputs()], outputs=[droid_policy.DroidOutputs()]),
    EnvMode.CALVIN: _transforms.Group(inputs=[calvin_policy.CalvinInputs()], outputs=[calvin_policy.CalvinOutputs()]),
    EnvMode.LIBERO: _transforms.Group(inputs=[libero_policy.LiberoInputs()], outputs=[libero_policy.LiberoOutputs()]),
}


def create_policy(args: Args) -> _policy.Policy:
    """The policy `args` describe."""
    match args.policy:
        case Checkpoint(config=config_name, dir=checkpoint_dir):
            return _policy_config.create_trained_policy(
                _config.get_config(config_name), checkpoint_dir, default_prompt=args.default_prompt
            )
        case Exported(dir=exported_dir, processor=processor):
            return _policy_config.create_exported_policy(
                exported_dir,
                data_transforms=ENV_DATA_TRANSFORMS[args.env],
                processor=processor,
                default_processor=DEFAULT_EXPORTED[args.env].processor,
                default_prompt=args.default_prompt,
            )
        case Default():
            checkpoint = DEFAULT_CHECKPOINT[args.env]
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
