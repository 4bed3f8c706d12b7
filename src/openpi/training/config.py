"""Train configs: the data pipeline of each robot dataset and the named registry (`get_config`, `cli`)."""

import abc
from collections.abc import Callable, Mapping, Sequence
import dataclasses
import difflib
import logging
import pathlib
from typing import Any, Literal, Protocol, TypeAlias

import flax.nnx as nnx
import tyro

from openpi import transforms as _transforms
from openpi.models import gemma
from openpi.models import lora
from openpi.models import model as _model
from openpi.models import pi0
from openpi.models import pi0_fast
from openpi.models import siglip
from openpi.models import tokenizer as _tokenizer
from openpi.policies import aloha_policy
from openpi.policies import calvin_policy
from openpi.policies import droid_policy
from openpi.policies import libero_policy
from openpi.policies import robot as _robot
from openpi.policies import robots as _robots
from openpi.policies import ur5_policy
from openpi.training import checkpoints as _checkpoints
from openpi.training import debug_data
from openpi.training import optimizer as _optimizer
from openpi.training import weight_loaders

logger = logging.getLogger(__name__)

ModelType: TypeAlias = _model.ModelType
# tyro cannot parse nnx filters; fields of this type are hidden from the CLI.
Filter: TypeAlias = nnx.filterlib.Filter

_CHECKPOINTS = "s3://openpi-assets/checkpoints"
PI0_BASE_PARAMS = f"{_CHECKPOINTS}/pi0_base/params"
PI0_BASE_ASSETS = f"{_CHECKPOINTS}/pi0_base/assets"
PI05_BASE_PARAMS = f"{_CHECKPOINTS}/pi05_base/params"
PI05_BASE_ASSETS = f"{_CHECKPOINTS}/pi05_base/assets"
PI0_FAST_BASE_PARAMS = f"{_CHECKPOINTS}/pi0_fast_base/params"
PI05_DROID_PARAMS = f"{_CHECKPOINTS}/pi05_droid/params"
PI05_DROID_ASSETS = f"{_CHECKPOINTS}/pi05_droid/assets"


@dataclasses.dataclass(frozen=True)
class AssetsConfig:
    """Where a data config finds its assets (norm stats): `<assets_dir>/<asset_id>/norm_stats.json`.

    `assets_dir` defaults to the train config's assets dir (`<assets_base_dir>/<config name>`), `asset_id` to
    the dataset's repo id. Pointing both at a base checkpoint reuses its stats, e.g.
    `AssetsConfig(assets_dir="s3://openpi-assets/checkpoints/pi0_base/assets", asset_id="trossen")`.
    The stats are copied into every training checkpoint under `assets/<asset_id>/`.
    """

    assets_dir: str | None = None
    asset_id: str | None = None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Everything the data loader and the policy need to turn dataset samples into model inputs."""

    # LeRobot repo id; None (or "fake") trains on random data shaped like the model inputs.
    repo_id: str | None = None
    # Directory name of the norm stats inside the assets dir (and inside checkpoints' `assets/`); defaults to the
    # repo id.
    asset_id: str | None = None
    # Normalization stats; None disables normalization.
    norm_stats: dict[str, _transforms.NormStats] | None = None

    # Dataset keys → the keys the robot sends at inference time (training only).
    repack_transforms: _transforms.Group = dataclasses.field(default_factory=_transforms.Group)
    # Robot-specific transforms, applied before normalization (training and inference).
    data_transforms: _transforms.Group = dataclasses.field(default_factory=_transforms.Group)
    # Model-specific transforms (resize, tokenize, pad), applied after normalization.
    model_transforms: _transforms.Group = dataclasses.field(default_factory=_transforms.Group)
    # Quantile normalization ([q01, q99] → [-1, 1]) instead of z-score.
    use_quantile_norm: bool = False

    # Dataset keys stacked into chunks of `action_horizon` future rows.
    action_sequence_keys: Sequence[str] = ("actions",)
    # Take the prompt from the LeRobot task of each frame.
    prompt_from_task: bool = False
    # Never fetch the dataset from the Hugging Face hub.
    local_files_only: bool = False
    # Called before the dataset is opened; writes it if absent (generated datasets of the debug configs).
    generate_dataset: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        # The README's guide builds its DataConfig with a repo id alone: its norm stats live under the repo id.
        if self.asset_id is None and self.repo_id not in (None, "fake"):
            object.__setattr__(self, "asset_id", self.repo_id)


class GroupFactory(Protocol):
    """Builds a transform group for a model config (robot transforms of `SimpleDataConfig`, model transforms)."""

    def __call__(self, model_config: _model.BaseModelConfig) -> _transforms.Group: ...


@dataclasses.dataclass(frozen=True)
class ModelTransformFactory(GroupFactory):
    """Model transforms per model family: default prompt, resize to the model's image size, then
    pi0: tokenize the prompt, pad state and actions to action_dim;
    pi0.5: tokenize the prompt (with the normalized state when `discrete_state_input`), pad;
    pi0-FAST: tokenize prompt, state and actions (no padding), and turn the generated tokens back into actions."""

    default_prompt: str | None = None
    # "paligemma": the PaliGemma sentencepiece model (downloaded; pi0-FAST also the FAST vocabulary); "debug": the
    # offline character tokenizers of `debug_data`.
    tokenizer: Literal["paligemma", "debug"] = "paligemma"

    def __call__(self, model_config: _model.BaseModelConfig) -> _transforms.Group:
        height, width = getattr(model_config, "image_resolution", _model.IMAGE_RESOLUTION)
        common = [_transforms.InjectDefaultPrompt(self.default_prompt), _transforms.ResizeImages(height, width)]
        if model_config.model_type == ModelType.PI0_FAST:
            tokenizer = self._fast_tokenizer(model_config)
            return _transforms.Group(
                inputs=[*common, _transforms.TokenizeFASTInputs(tokenizer)],
                outputs=[
                    _transforms.ExtractFASTActions(tokenizer, model_config.action_horizon, model_config.action_dim)
                ],
            )
        if self.tokenizer == "debug":
            tokenizer = debug_data.make_tokenizer(model_config.max_token_len)
        else:
            tokenizer = _tokenizer.PaligemmaTokenizer(model_config.max_token_len)
        discrete_state_input = bool(getattr(model_config, "discrete_state_input", False))
        return _transforms.Group(
            inputs=[
                *common,
                _transforms.TokenizePrompt(tokenizer, discrete_state_input=discrete_state_input),
                _transforms.PadStatesAndActions(model_config.action_dim),
            ]
        )

    def _fast_tokenizer(self, model_config: _model.BaseModelConfig) -> _tokenizer.FASTTokenizer:
        max_len = model_config.max_token_len
        if self.tokenizer == "debug":
            return debug_data.make_fast_tokenizer(max_len, model_config.action_horizon, model_config.action_dim)
        make = getattr(model_config, "fast_model_tokenizer", None) or _tokenizer.FASTTokenizer
        return make(max_len, **(getattr(model_config, "fast_model_tokenizer_kwargs", None) or {}))


@dataclasses.dataclass(frozen=True)
class DataConfigFactory(abc.ABC):
    """Builds a `DataConfig` for a model: `create(assets_dirs, model_config)`, where `assets_dirs` is the train
    config's assets dir and `model_config` the model config (it has `action_dim`, `action_horizon`,
    `max_token_len`)."""

    # The LeRobot repo id.
    repo_id: str = tyro.MISSING
    # Where the norm stats come from.
    assets: AssetsConfig = dataclasses.field(default_factory=AssetsConfig)
    # Fields of the resulting DataConfig that the factory does not set itself.
    base_config: tyro.conf.Suppress[DataConfig | None] = None
    # Prompt tokenizer of the model transforms (see ModelTransformFactory).
    tokenizer: Literal["paligemma", "debug"] = "paligemma"

    @abc.abstractmethod
    def create(self, assets_dirs: pathlib.Path, model_config: _model.BaseModelConfig) -> DataConfig:
        """Creates the data config."""

    def create_base_config(
        self, assets_dirs: pathlib.Path, model_config: _model.BaseModelConfig | None = None
    ) -> DataConfig:
        """`base_config` with the repo id, asset id and the norm stats found under the assets dir (None when it has
        none for the asset id)."""
        repo_id = None if self.repo_id is tyro.MISSING else self.repo_id
        asset_id = self.assets.asset_id or repo_id
        assets_dir = self.assets.assets_dir or assets_dirs
        norm_stats = None
        if asset_id is not None:
            try:
                norm_stats = _checkpoints.load_norm_stats(assets_dir, asset_id)
            except FileNotFoundError:
                logger.info("No norm stats for %s in %s", asset_id, assets_dir)
        config = dataclasses.replace(
            self.base_config or DataConfig(), repo_id=repo_id, asset_id=asset_id, norm_stats=norm_stats
        )
        if model_config is not None:
            config = dataclasses.replace(config, use_quantile_norm=model_config.model_type != ModelType.PI0)
        return config

    def model_transforms(self, model: _model.BaseModelConfig, default_prompt: str | None = None) -> _transforms.Group:
        return ModelTransformFactory(default_prompt=default_prompt, tokenizer=self.tokenizer)(model)

    def create_robot_config(
        self,
        assets_dirs: pathlib.Path,
        model_config: _model.BaseModelConfig,
        robot: _robot.Robot,
        *,
        delta_actions: bool = False,
        default_prompt: str | None = None,
        transform_options: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> DataConfig:
        """The data config of a LeRobot dataset of `robot`, from its record: the base config, the record's repack and
        action keys (where its dataset names differ from the robot's), its robot transforms (masked action dims as
        deltas when `delta_actions`; `transform_options` set fields of both) and the model transforms with
        `default_prompt`, else the robot's. `fields` set further DataConfig fields, the record's ones included."""
        robot_fields: dict[str, Any] = {}
        if robot.lerobot_keys is not None:
            robot_fields["repack_transforms"] = robot.repack_transforms()
        if robot.action_sequence_keys is not None:
            robot_fields["action_sequence_keys"] = robot.action_sequence_keys
        data_transforms = robot.data_transforms(
            _robot_action_dim(model_config),
            model_config.model_type,
            delta_actions=delta_actions,
            **(transform_options or {}),
        )
        prompt = robot.default_prompt if default_prompt is None else default_prompt
        return dataclasses.replace(
            self.create_base_config(assets_dirs, model_config),
            data_transforms=data_transforms,
            model_transforms=self.model_transforms(model_config, prompt),
            **(robot_fields | fields),
        )


@dataclasses.dataclass(frozen=True)
class FakeDataConfig(DataConfigFactory):
    """Random inputs shaped like the model's (no dataset, no transforms)."""

    repo_id: str = "fake"

    def create(self, metadata_dir: pathlib.Path, model: _model.BaseModelConfig) -> DataConfig:
        return DataConfig(repo_id=self.repo_id)


@dataclasses.dataclass(frozen=True)
class SimpleDataConfig(DataConfigFactory):
    """A dataset whose samples already have the robot's inference keys: only data + model transforms."""

    # Builds the robot transforms for a model config.
    data_transforms: tyro.conf.Suppress[Callable[[_model.BaseModelConfig], _transforms.Group]] = _transforms.Group
    default_prompt: str | None = None
    # Builds the model transforms (the original's field); None: `ModelTransformFactory` with `default_prompt` and
    # `tokenizer`.
    model_transforms: tyro.conf.Suppress[GroupFactory | None] = None

    def create(self, assets_dirs: pathlib.Path, model_config: _model.BaseModelConfig) -> DataConfig:
        model_transforms = self.model_transforms or ModelTransformFactory(self.default_prompt, self.tokenizer)
        return dataclasses.replace(
            self.create_base_config(assets_dirs, model_config),
            data_transforms=self.data_transforms(model_config),
            model_transforms=model_transforms(model_config),
        )


def _robot_action_dim(model: _model.BaseModelConfig) -> int | None:
    """The `action_dim` of a robot input transform: pi0-FAST has no padding model transform, so its robot transforms
    pad state and actions to the model's action dim; pi0 and pi0.5 pad after normalization (pi0.5's prompt shows
    the robot's own state dims)."""
    return model.action_dim if model.model_type == ModelType.PI0_FAST else None


# ALOHA dataset keys → AlohaInputs keys, for datasets with only the top camera (e.g. the aloha_sim ones) ...
ALOHA_TOP_CAMERA_REPACK = aloha_policy.ALOHA_SIM.repack_transforms()
# ... and for datasets with the high and both wrist cameras.
ALOHA_THREE_CAMERA_REPACK = aloha_policy.ALOHA.repack_transforms()


@dataclasses.dataclass(frozen=True)
class LeRobotAlohaDataConfig(DataConfigFactory):
    """ALOHA LeRobot datasets (`observation.state`, `action` 14-d, `observation.images.*`)."""

    # Train on joint actions relative to the current state (grippers stay absolute).
    use_delta_joint_actions: bool = True
    # Prompt used when a sample has none.
    default_prompt: str | None = None
    # Convert joints and grippers to the space of the pi runtime (needed for the original base weights).
    adapt_to_pi: bool = True
    # Dataset keys → AlohaInputs keys.
    repack_transforms: tyro.conf.Suppress[_transforms.Group] = ALOHA_TOP_CAMERA_REPACK
    # Dataset keys stacked into action chunks.
    action_sequence_keys: Sequence[str] = ("action",)

    def create(self, metadata_dir: pathlib.Path, model: _model.BaseModelConfig) -> DataConfig:
        return self.create_robot_config(
            metadata_dir,
            model,
            aloha_policy.ALOHA,
            delta_actions=self.use_delta_joint_actions,
            default_prompt=self.default_prompt,
            transform_options={"adapt_to_pi": self.adapt_to_pi},
            repack_transforms=self.repack_transforms,
            action_sequence_keys=self.action_sequence_keys,
        )


@dataclasses.dataclass(frozen=True)
class LeRobotLiberoDataConfig(DataConfigFactory):
    """LIBERO LeRobot datasets (`image`, `wrist_image`, `state` 8-d, `actions` 7-d, prompt from the task)."""

    # Also convert the (already relative) LIBERO actions to deltas, as some original checkpoints were trained.
    extra_delta_transform: bool = False

    def create(self, metadata_dir: pathlib.Path, model: _model.BaseModelConfig) -> DataConfig:
        return self.create_robot_config(
            metadata_dir, model, libero_policy.LIBERO, delta_actions=self.extra_delta_transform
        )


@dataclasses.dataclass(frozen=True)
class LeRobotDroidDataConfig(DataConfigFactory):
    """DROID LeRobot datasets (`exterior_image_1_left`, `wrist_image_left`, `joint_position` 7,
    `gripper_position` 1, `actions` 8-d joint velocities + gripper, prompt from the task)."""

    default_prompt: str | None = None

    def create(self, metadata_dir: pathlib.Path, model: _model.BaseModelConfig) -> DataConfig:
        return self.create_robot_config(metadata_dir, model, droid_policy.DROID, default_prompt=self.default_prompt)


# The original's spelling.
LeRobotDROIDDataConfig = LeRobotDroidDataConfig


@dataclasses.dataclass(frozen=True)
class LeRobotCalvinDataConfig(DataConfigFactory):
    """CALVIN LeRobot datasets: `rgb_static`, `rgb_gripper` images, `robot_obs` (15-d), `rel_actions` (7-d),
    prompt from the task (the language annotation). See `calvin_policy` for the state/action mapping."""

    def create(self, metadata_dir: pathlib.Path, model: _model.BaseModelConfig) -> DataConfig:
        return self.create_robot_config(metadata_dir, model, calvin_policy.CALVIN)


@dataclasses.dataclass(frozen=True)
class UR5DataConfig(DataConfigFactory):
    """The UR5 example of the README guide: LeRobot keys equal the robot's keys (`joints`, `gripper`,
    `base_rgb`, `wrist_rgb`, `actions`, `prompt`)."""

    # Train on joint actions relative to the current state (the gripper stays absolute).
    use_delta_joint_actions: bool = False
    default_prompt: str | None = None
    # Never fetch the dataset from the Hugging Face hub.
    local_files_only: bool = False

    def create(self, metadata_dir: pathlib.Path, model: _model.BaseModelConfig) -> DataConfig:
        return self.create_robot_config(
            metadata_dir,
            model,
            ur5_policy.UR5,
            delta_actions=self.use_delta_joint_actions,
            default_prompt=self.default_prompt,
            local_files_only=self.local_files_only,
        )


@dataclasses.dataclass(frozen=True)
class RobotDataConfig(DataConfigFactory):
    """A LeRobot dataset of any robot of `openpi.policies.robots.ROBOTS`, read as its record says (keys, transforms,
    delta-action mask): a robot added there trains without a data-config factory of its own."""

    # Registry name of the robot, e.g. "ur5".
    robot: str = tyro.MISSING
    # Train on the record's delta-action dims relative to the current state (the others stay absolute).
    use_delta_joint_actions: bool = False
    default_prompt: str | None = None

    def create(self, metadata_dir: pathlib.Path, model: _model.BaseModelConfig) -> DataConfig:
        if self.robot not in _robots.ROBOTS:
            raise ValueError(f"robot: expected one of {sorted(_robots.ROBOTS)}, got {self.robot!r}")
        return self.create_robot_config(
            metadata_dir,
            model,
            _robots.ROBOTS[self.robot],
            delta_actions=self.use_delta_joint_actions,
            default_prompt=self.default_prompt,
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: model, initial weights, data, optimization, checkpointing and logging."""

    # Unique name of the config; names the assets and checkpoint directories.
    name: tyro.conf.Suppress[str]
    # Project name (wandb).
    project_name: str = "openpi"
    # Experiment name; checkpoints go to <checkpoint_base_dir>/<name>/<exp_name>.
    exp_name: str = tyro.MISSING

    # The model (pi0 sizes, variants, LoRA).
    model: _model.BaseModelConfig = dataclasses.field(default_factory=pi0.Pi0Config)
    # Initial weights, loaded after the model is initialised.
    weight_loader: weight_loaders.WeightLoader = dataclasses.field(default_factory=weight_loaders.NoOpWeightLoader)
    # The original's PyTorch training settings: accepted so that its configs load, unused (JAX only here).
    pytorch_weight_path: tyro.conf.Suppress[str | None] = None
    pytorch_training_precision: tyro.conf.Suppress[Literal["bfloat16", "float32"]] = "bfloat16"

    lr_schedule: _optimizer.LRScheduleConfig = dataclasses.field(default_factory=_optimizer.CosineDecaySchedule)
    optimizer: _optimizer.OptimizerConfig = dataclasses.field(default_factory=_optimizer.AdamW)
    # Decay of the exponential moving average of the params (saved as the checkpoint params); None disables it.
    ema_decay: float | None = 0.99

    # Params that are not trained (e.g. the base weights in LoRA fine-tuning); they are kept in bfloat16.
    freeze_filter: tyro.conf.Suppress[Filter] = dataclasses.field(default_factory=nnx.Nothing)

    # The data to train on.
    data: DataConfigFactory = dataclasses.field(default_factory=FakeDataConfig)

    # Base directory of config assets (norm stats): <assets_base_dir>/<name>/<asset_id>.
    assets_base_dir: str = "./assets"
    # Base directory of checkpoints.
    checkpoint_base_dir: str = "./checkpoints"

    # Seed of all random generators (init, data order, noise, augmentation).
    seed: int = 42
    # Global batch size over all devices and processes.
    batch_size: int = 32
    # Data loader worker threads.
    num_workers: int = 2
    # Number of train steps (batches).
    num_train_steps: int = 30_000

    # Steps between logged metrics.
    log_interval: int = 100
    # Steps between checkpoints (the last step is always saved).
    save_interval: int = 1000
    # Checkpoints at multiples of this step are never deleted; None keeps only the latest.
    keep_period: int | None = 5000

    # Delete an existing checkpoint directory and start afresh.
    overwrite: bool = False
    # Continue from the latest complete checkpoint in the checkpoint directory.
    resume: bool = False

    # Log to Weights & Biases (offline when there are no credentials).
    wandb_enabled: bool = True
    # Train on the CPU although an NVIDIA GPU is visible (JAX installed without CUDA); otherwise that stops the run.
    allow_cpu: bool = False

    # Extra metadata the policy server sends to clients.
    policy_metadata: tyro.conf.Suppress[dict[str, Any] | None] = None

    # Devices each param is sharded over (FSDP); the rest of the devices run data parallel.
    fsdp_devices: int = 1
    # Params smaller than this stay replicated under FSDP (splitting small arrays costs more than it saves).
    fsdp_min_param_bytes: int = 4 * 2**20

    @property
    def assets_dirs(self) -> pathlib.Path:
        """This config's assets directory: `<assets_base_dir>/<name>`."""
        return (pathlib.Path(self.assets_base_dir) / self.name).resolve()

    @property
    def checkpoint_dir(self) -> pathlib.Path:
        """This run's checkpoint directory: `<checkpoint_base_dir>/<name>/<exp_name>`."""
        if not self.exp_name or self.exp_name is tyro.MISSING:
            raise ValueError("exp_name: required (e.g. --exp-name=my_experiment)")
        return (pathlib.Path(self.checkpoint_base_dir) / self.name / self.exp_name).resolve()

    @property
    def trainable_filter(self) -> Filter:
        """The params the optimizer updates."""
        return nnx.All(nnx.Param, nnx.Not(self.freeze_filter))

    def __post_init__(self) -> None:
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite: choose one (resume continues a run, overwrite deletes it)")
        for field in ("batch_size", "num_train_steps", "log_interval", "save_interval", "fsdp_devices"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field}: expected a positive integer, got {getattr(self, field)}")
        if self.keep_period is not None and self.keep_period < 1:
            raise ValueError(f"keep_period: expected a positive integer or None, got {self.keep_period}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected a value in [0, 1) or None, got {self.ema_decay}")


# Tiny pi0 for the debug configs: trains in milliseconds per step on a CPU. Its vocabulary covers the debug
# character tokenizer.
DEBUG_MODEL = pi0.Pi0Config(
    dtype="float32",
    paligemma_variant=gemma.Config(width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=1, head_dim=8),
    action_expert_variant=gemma.Config(width=32, depth=2, mlp_dim=64, num_heads=4, num_kv_heads=1, head_dim=8),
    vision_variant=siglip.Config(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=(16, 16)),
    vocab_size=128,
    image_resolution=(64, 64),
    action_horizon=10,
    max_token_len=32,
    remat=False,
)
assert DEBUG_MODEL.vocab_size >= debug_data.TOKENIZER_VOCAB_SIZE

_LORA_MODEL = pi0.Pi0Config(paligemma_variant="gemma_2b_lora", action_expert_variant="gemma_300m_lora")
_DEBUG_ADAPTERS = (("attn", lora.LoRAConfig(rank=4, alpha=4.0)), ("ffn", lora.LoRAConfig(rank=4, alpha=4.0)))
DEBUG_LORA_MODEL = dataclasses.replace(
    DEBUG_MODEL,
    paligemma_variant=dataclasses.replace(DEBUG_MODEL.paligemma_variant, lora_configs=_DEBUG_ADAPTERS),
    action_expert_variant=dataclasses.replace(DEBUG_MODEL.action_expert_variant, lora_configs=_DEBUG_ADAPTERS),
)
# The debug model twice as wide: fits the generated debug dataset within a few hundred steps (`debug_overfit`).
_DEBUG_WIDE_GEMMA = gemma.Config(width=64, depth=2, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=16)
DEBUG_OVERFIT_MODEL = dataclasses.replace(
    DEBUG_MODEL, paligemma_variant=_DEBUG_WIDE_GEMMA, action_expert_variant=_DEBUG_WIDE_GEMMA
)
# The debug model as pi0.5: the state is in the prompt, one character per token, so the prompt is longer.
DEBUG_PI05_MODEL = dataclasses.replace(DEBUG_MODEL, pi05=True, discrete_state_input=True, max_token_len=112)
# A tiny pi0-FAST reading the debug FAST tokenizer (its vocabulary sets `vocab_size`). The ALOHA robot transforms
# fill pi0's camera slots, so the model reads those. The prompt carries the task, 14 state bins and the FAST action
# tokens, one character per token.
DEBUG_FAST_MODEL = pi0_fast.Pi0FASTConfig(
    dtype="float32",
    paligemma_variant=DEBUG_MODEL.paligemma_variant,
    vision_variant=DEBUG_MODEL.vision_variant,
    vocab_size=debug_data.FAST_TOKENIZER_VOCAB_SIZE,
    image_resolution=(64, 64),
    action_dim=14,
    action_horizon=10,
    max_token_len=160,
    remat=False,
    image_keys=_model.IMAGE_KEYS,
)
_ALOHA_RESET_POSE = {"reset_pose": [0, -1.5, 1.5, 0, 0, 0]}


def _debug_aloha_data() -> LeRobotAlohaDataConfig:
    """The generated ALOHA-shaped debug dataset, its prompts taken from the tasks, tokenized offline."""
    return LeRobotAlohaDataConfig(
        repo_id=debug_data.DEBUG_ALOHA_REPO_ID,
        use_delta_joint_actions=False,
        adapt_to_pi=False,
        repack_transforms=_transforms.Group(
            inputs=[_transforms.RepackTransform({**ALOHA_THREE_CAMERA_REPACK.inputs[0].structure, "prompt": "prompt"})]
        ),
        tokenizer="debug",
        base_config=DataConfig(
            prompt_from_task=True, local_files_only=True, generate_dataset=debug_data.ensure_aloha_dataset
        ),
    )


def _debug_config(name: str, **overrides) -> TrainConfig:
    settings = {
        "name": name,
        "exp_name": "debug",
        "model": DEBUG_MODEL,
        "data": _debug_aloha_data(),
        "batch_size": 8,
        "num_train_steps": 10,
        "lr_schedule": _optimizer.CosineDecaySchedule(warmup_steps=10, peak_lr=1e-3, decay_steps=1_000, decay_lr=1e-4),
        "log_interval": 1,
        "save_interval": 100,
        "keep_period": None,
        "num_workers": 0,
        "wandb_enabled": False,
    }
    return TrainConfig(**(settings | overrides))


# The small pi0 of the ALOHA sim demo: ~0.3M parameters, 96x96 images in 6x6 patches of 16 pixels (the number of
# tokens sets the cost of a train step on a CPU: 8x8 patches are ~5x slower).
ALOHA_SIM_DEMO_MODEL = pi0.Pi0Config(
    dtype="float32",
    paligemma_variant=gemma.Config(width=64, depth=2, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=16),
    action_expert_variant=gemma.Config(width=64, depth=2, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=16),
    vision_variant=siglip.Config(width=64, depth=2, mlp_dim=128, num_heads=4, patch_size=(16, 16)),
    vocab_size=128,
    image_resolution=(96, 96),
    action_horizon=20,
    # "Transfer cube" is 17 tokens of the character tokenizer: no padding tokens to pay for in every step.
    max_token_len=18,
    remat=False,
    # Two layers per tower: compiled unrolled, a train step is ~15 % faster on a CPU (same parameters).
    unroll_layers=True,
    # The demos record the top camera only: no wrist-camera tokens to pay for. Colour jitter only: crop and rotation
    # move the 3-pixel cube by more than the grasp tolerates, and the simulated camera never moves. Without the
    # jitter, the policy did worse (8 % instead of 35-50 %; bench/RESULTS.md).
    image_keys=("base_0_rgb",),
    augmentation="color",
)
assert ALOHA_SIM_DEMO_MODEL.vocab_size >= debug_data.TOKENIZER_VOCAB_SIZE


def _aloha_sim_demo_data(*, adapt_to_pi: bool, tokenizer: Literal["paligemma", "debug"]) -> LeRobotAlohaDataConfig:
    """The demo's generated dataset (top camera, absolute joint actions, prompt from the task), read locally."""
    return LeRobotAlohaDataConfig(
        repo_id="openpi/aloha_sim_demo",
        use_delta_joint_actions=False,
        adapt_to_pi=adapt_to_pi,
        repack_transforms=_transforms.Group(
            inputs=[
                _transforms.RepackTransform(
                    {
                        "images": {"cam_high": "observation.images.cam_high"},
                        "state": "observation.state",
                        "actions": "action",
                        "prompt": "prompt",
                    }
                )
            ]
        ),
        tokenizer=tokenizer,
        base_config=DataConfig(prompt_from_task=True, local_files_only=True),
    )


# The original fed pi0-FAST the LIBERO cameras in pi0's slots, so its tokens came in the order agent view, wrist,
# black padding. Our LIBERO inputs fill pi0-FAST's slots; the LIBERO models read them in that same order, so the
# released pi0_fast_libero sees what it was trained on.
_FAST_LIBERO_IMAGE_KEYS = ("base_0_rgb", "wrist_0_rgb", "base_1_rgb")
_FAST_LIBERO_MODEL = pi0_fast.Pi0FASTConfig(
    action_dim=7, action_horizon=10, max_token_len=180, image_keys=_FAST_LIBERO_IMAGE_KEYS
)
_FAST_LIBERO_LORA_MODEL = dataclasses.replace(_FAST_LIBERO_MODEL, paligemma_variant="gemma_2b_lora")
# Fine-tuning on the full DROID release. The original reads its RLDS build (TensorFlow) with joint *position* actions
# trained as deltas; there is no RLDS reader here, so these configs train on a LeRobot conversion of DROID
# (examples/droid/convert_droid_data_to_lerobot.py), whose actions are joint velocities + gripper, as `pi0_droid`'s.
_FULL_DROID_REPO_ID = "your_hf_username/droid"
_FULL_DROID_SCHEDULE = _optimizer.CosineDecaySchedule(
    warmup_steps=1_000, peak_lr=5e-5, decay_steps=1_000_000, decay_lr=5e-5
)


# The robot transforms and norm stats of the released DROID checkpoints (prompt from the task when training).
_DROID_INFERENCE_DATA = LeRobotDroidDataConfig(
    assets=AssetsConfig(asset_id="droid"), base_config=DataConfig(prompt_from_task=True)
)


def _libero_data(*, extra_delta_transform: bool) -> LeRobotLiberoDataConfig:
    """The public LIBERO dataset (`physical-intelligence/libero`), prompts from its tasks."""
    return LeRobotLiberoDataConfig(
        repo_id="physical-intelligence/libero",
        base_config=DataConfig(prompt_from_task=True),
        extra_delta_transform=extra_delta_transform,
    )


# Use `get_config(name)` to look a config up.
_CONFIGS = [
    #
    # Inference configs of the released ALOHA and DROID checkpoints.
    #
    TrainConfig(
        name="pi0_aloha",
        data=LeRobotAlohaDataConfig(assets=AssetsConfig(asset_id="trossen")),
        policy_metadata=_ALOHA_RESET_POSE,
    ),
    TrainConfig(
        name="pi0_aloha_towel",
        data=LeRobotAlohaDataConfig(assets=AssetsConfig(asset_id="trossen"), default_prompt="fold the towel"),
        policy_metadata=_ALOHA_RESET_POSE,
    ),
    TrainConfig(
        name="pi0_aloha_tupperware",
        data=LeRobotAlohaDataConfig(
            assets=AssetsConfig(asset_id="trossen"),
            default_prompt="open the tupperware and put the food on the plate",
        ),
        policy_metadata=_ALOHA_RESET_POSE,
    ),
    TrainConfig(
        name="pi0_droid",
        model=pi0.Pi0Config(action_horizon=10),
        data=_DROID_INFERENCE_DATA,
    ),
    TrainConfig(
        name="pi05_aloha",
        model=pi0.Pi0Config(pi05=True),
        data=LeRobotAlohaDataConfig(assets=AssetsConfig(asset_id="trossen")),
        policy_metadata=_ALOHA_RESET_POSE,
    ),
    TrainConfig(
        name="pi0_fast_droid",
        model=pi0_fast.Pi0FASTConfig(action_dim=8, action_horizon=10),
        data=_DROID_INFERENCE_DATA,
    ),
    TrainConfig(
        name="pi05_droid",
        model=pi0.Pi0Config(pi05=True, action_horizon=15),
        data=_DROID_INFERENCE_DATA,
    ),
    #
    # Inference configs of the RoboArena DROID baselines trained from PaliGemma (the binning and FSQ tokenizer ones
    # are not here: their tokenizers are not).
    #
    TrainConfig(
        # FAST tokens from the universal FAST+ tokenizer.
        name="paligemma_fast_droid",
        model=pi0_fast.Pi0FASTConfig(action_dim=8, action_horizon=15),
        data=_DROID_INFERENCE_DATA,
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_FAST_BASE_PARAMS),
    ),
    TrainConfig(
        # FAST tokens from a tokenizer fitted on DROID.
        name="paligemma_fast_specialist_droid",
        model=pi0_fast.Pi0FASTConfig(
            action_dim=8,
            action_horizon=15,
            fast_model_tokenizer=_tokenizer.FASTTokenizer,
            fast_model_tokenizer_kwargs={"fast_tokenizer_path": "KarlP/fast_droid_specialist"},
        ),
        data=_DROID_INFERENCE_DATA,
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_FAST_BASE_PARAMS),
    ),
    TrainConfig(
        # A pi0-style flow-matching policy.
        name="paligemma_diffusion_droid",
        model=pi0.Pi0Config(action_horizon=10, action_dim=8),
        data=_DROID_INFERENCE_DATA,
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_BASE_PARAMS),
    ),
    #
    # Fine-tuning configs.
    #
    TrainConfig(
        name="pi0_libero",
        data=_libero_data(extra_delta_transform=True),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_BASE_PARAMS),
        num_train_steps=30_000,
    ),
    TrainConfig(
        # LoRA fine-tuning: only the adapters (and the small non-Gemma layers) train; fits in ~22.5 GB.
        name="pi0_libero_low_mem_finetune",
        model=_LORA_MODEL,
        data=_libero_data(extra_delta_transform=True),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_BASE_PARAMS),
        num_train_steps=30_000,
        freeze_filter=_LORA_MODEL.get_freeze_filter(),
        ema_decay=None,
    ),
    TrainConfig(
        # pi0-FAST fully fine-tuned from pi0_fast_base. `max_token_len` bounds prompt + state + action tokens: about
        # 180 for one arm, 250 for two; too small cuts tokens off (with a warning), too large wastes memory.
        name="pi0_fast_libero",
        model=_FAST_LIBERO_MODEL,
        data=_libero_data(extra_delta_transform=True),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_FAST_BASE_PARAMS),
        num_train_steps=30_000,
    ),
    TrainConfig(
        # pi0-FAST LoRA fine-tuning: frozen Gemma base weights, no EMA.
        name="pi0_fast_libero_low_mem_finetune",
        model=_FAST_LIBERO_LORA_MODEL,
        data=_libero_data(extra_delta_transform=True),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_FAST_BASE_PARAMS),
        num_train_steps=30_000,
        freeze_filter=_FAST_LIBERO_LORA_MODEL.get_freeze_filter(),
        ema_decay=None,
    ),
    TrainConfig(
        # pi0.5 on LIBERO without the state in the prompt (the model ignores the state).
        name="pi05_libero",
        model=pi0.Pi0Config(pi05=True, action_horizon=10, discrete_state_input=False),
        data=_libero_data(extra_delta_transform=False),
        batch_size=256,
        lr_schedule=_optimizer.CosineDecaySchedule(
            warmup_steps=10_000, peak_lr=5e-5, decay_steps=1_000_000, decay_lr=5e-5
        ),
        optimizer=_optimizer.AdamW(clip_gradient_norm=1.0),
        ema_decay=0.999,
        weight_loader=weight_loaders.CheckpointWeightLoader(PI05_BASE_PARAMS),
        num_train_steps=30_000,
    ),
    TrainConfig(
        name="pi0_aloha_pen_uncap",
        data=LeRobotAlohaDataConfig(
            repo_id="physical-intelligence/aloha_pen_uncap_diverse",
            assets=AssetsConfig(assets_dir=PI0_BASE_ASSETS, asset_id="trossen"),
            default_prompt="uncap the pen",
            repack_transforms=ALOHA_THREE_CAMERA_REPACK,
        ),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_BASE_PARAMS),
        num_train_steps=20_000,
    ),
    TrainConfig(
        name="pi05_aloha_pen_uncap",
        model=pi0.Pi0Config(pi05=True),
        data=LeRobotAlohaDataConfig(
            repo_id="physical-intelligence/aloha_pen_uncap_diverse",
            assets=AssetsConfig(assets_dir=PI05_BASE_ASSETS, asset_id="trossen"),
            default_prompt="uncap the pen",
            repack_transforms=ALOHA_THREE_CAMERA_REPACK,
        ),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI05_BASE_PARAMS),
        num_train_steps=20_000,
        batch_size=64,
    ),
    TrainConfig(
        # pi0-FAST fine-tuned from pi0_fast_base on the full DROID dataset (see `_FULL_DROID_REPO_ID`).
        name="pi0_fast_full_droid_finetune",
        model=pi0_fast.Pi0FASTConfig(action_dim=8, action_horizon=16, max_token_len=180),
        data=LeRobotDroidDataConfig(
            repo_id=_FULL_DROID_REPO_ID,
            assets=AssetsConfig(asset_id="droid"),
            base_config=DataConfig(prompt_from_task=True),
        ),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_FAST_BASE_PARAMS),
        lr_schedule=_FULL_DROID_SCHEDULE,
        num_train_steps=100_000,
        batch_size=256,
        log_interval=100,
        save_interval=5000,
        keep_period=20_000,
    ),
    TrainConfig(
        # pi0.5 fine-tuned from pi05_base on the full DROID dataset (see `_FULL_DROID_REPO_ID`), with pi05_base's
        # DROID norm stats.
        name="pi05_full_droid_finetune",
        model=pi0.Pi0Config(pi05=True, action_dim=32, action_horizon=16),
        data=LeRobotDroidDataConfig(
            repo_id=_FULL_DROID_REPO_ID,
            assets=AssetsConfig(assets_dir=PI05_BASE_ASSETS, asset_id="droid"),
            base_config=DataConfig(prompt_from_task=True),
        ),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI05_BASE_PARAMS),
        lr_schedule=_FULL_DROID_SCHEDULE,
        num_train_steps=100_000,
        batch_size=256,
        log_interval=100,
        save_interval=5000,
        keep_period=10_000,
    ),
    TrainConfig(
        # pi05_droid fine-tuned on your own (smaller) DROID dataset in LeRobot format, reusing pi05_droid's norm
        # stats.
        name="pi05_droid_finetune",
        model=pi0.Pi0Config(pi05=True, action_dim=32, action_horizon=16),
        data=LeRobotDroidDataConfig(
            repo_id="your_hf_username/my_droid_dataset",
            assets=AssetsConfig(assets_dir=PI05_DROID_ASSETS, asset_id="droid"),
            base_config=DataConfig(prompt_from_task=True),
        ),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI05_DROID_PARAMS),
        num_train_steps=20_000,
        batch_size=32,
    ),
    TrainConfig(
        name="pi0_aloha_sim",
        data=LeRobotAlohaDataConfig(
            repo_id="lerobot/aloha_sim_transfer_cube_human",
            default_prompt="Transfer cube",
            use_delta_joint_actions=False,
        ),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_BASE_PARAMS),
        num_train_steps=20_000,
    ),
    TrainConfig(
        name="pi0_calvin",
        data=LeRobotCalvinDataConfig(
            repo_id="openpi/calvin_abc",
            assets=AssetsConfig(asset_id="calvin"),
            base_config=DataConfig(prompt_from_task=True),
        ),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_BASE_PARAMS),
        num_train_steps=30_000,
    ),
    TrainConfig(
        # The UR5 example of the README ("Define the training config").
        name="ur5",
        data=UR5DataConfig(
            repo_id="lerobot/my_ur5_dataset",
            use_delta_joint_actions=True,
            default_prompt="be a good robot",
            local_files_only=True,
        ),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_BASE_PARAMS),
    ),
    #
    # Debug configs: tiny models on generated data, for tests and smoke runs on a CPU.
    #
    # ALOHA-shaped data (14-d state/actions, cam_high + wrist cameras, prompts); a checkpoint serves with
    # `--env ALOHA_SIM policy:checkpoint --policy.config=debug`.
    _debug_config("debug"),
    # Random inputs, no dataset and no norm stats.
    _debug_config("debug_fake", data=FakeDataConfig()),
    # pi0.5 (state in the prompt, adaRMSNorm action expert) and pi0-FAST (action tokens) on the same data.
    _debug_config("debug_pi05", model=DEBUG_PI05_MODEL),
    _debug_config("debug_pi0_fast", model=DEBUG_FAST_MODEL),
    # LoRA fine-tuning of the tiny model: frozen base weights, no EMA.
    _debug_config(
        "debug_lora", model=DEBUG_LORA_MODEL, freeze_filter=DEBUG_LORA_MODEL.get_freeze_filter(), ema_decay=None
    ),
    # Starts from the last checkpoint of a `debug` run.
    _debug_config(
        "debug_restore", weight_loader=weight_loaders.CheckpointWeightLoader("./checkpoints/debug/debug/9/params")
    ),
    # Memorises the generated dataset: the flow-matching loss drops by more than 10x in 250 steps on a CPU. A
    # batch of 32 is what makes it fast: the loss of a single sample is noisy (random flow time and noise).
    _debug_config(
        "debug_overfit",
        model=DEBUG_OVERFIT_MODEL,
        batch_size=32,
        num_train_steps=250,
        lr_schedule=_optimizer.CosineDecaySchedule(warmup_steps=20, peak_lr=1e-2, decay_steps=250, decay_lr=1e-3),
        ema_decay=None,
        log_interval=10,
    ),
    #
    # The ALOHA sim demo (examples/aloha_sim/demo.py): scripted transfer-cube demos at
    # `$HF_LEROBOT_HOME/openpi/aloha_sim_demo`, made by the demo or examples/aloha_sim/generate_data.py.
    #
    # A small pi0 trained from scratch in minutes on a CPU, offline (character tokenizer).
    TrainConfig(
        name="pi0_aloha_sim_demo",
        model=ALOHA_SIM_DEMO_MODEL,
        data=_aloha_sim_demo_data(adapt_to_pi=False, tokenizer="debug"),
        batch_size=32,
        # Of 40 episodes, 4000 steps handed the cube over in 18 %, 8000 in 78-80 %, 11000 and 12000 in 88 %
        # (bench/RESULTS.md).
        num_train_steps=11_000,
        lr_schedule=_optimizer.CosineDecaySchedule(warmup_steps=100, peak_lr=1e-3, decay_steps=11_000, decay_lr=5e-5),
        # Every log waits for the step in flight and every checkpoint takes ~3 s here: rarely enough to cost little.
        log_interval=100,
        save_interval=3_000,
        keep_period=None,
        wandb_enabled=False,
        # Sized for a CPU: a GPU machine with CPU-only JAX runs it too (with a warning).
        allow_cpu=True,
    ),
    # Full-size pi0 fine-tuned from pi0_base (downloads the weights and the PaliGemma tokenizer): a GPU.
    TrainConfig(
        name="pi0_aloha_sim_demo_full",
        data=_aloha_sim_demo_data(adapt_to_pi=True, tokenizer="paligemma"),
        weight_loader=weight_loaders.CheckpointWeightLoader(PI0_BASE_PARAMS),
        num_train_steps=5_000,
        lr_schedule=_optimizer.CosineDecaySchedule(decay_steps=5_000),
        save_interval=1_000,
        keep_period=None,
        wandb_enabled=False,
    ),
]


def _aloha_sim_demo_rtc(demo: TrainConfig) -> TrainConfig:
    """`demo` (`pi0_aloha_sim_demo`) fine-tuned with training-time real-time chunking
    (`Pi0Config.training_rtc_max_delay`, arXiv 2512.05964): each example's first 0..8 actions are given clean, so the
    model learns to continue the chunk being executed from the actions already committed, and `sample_actions`
    conditions on them that way (no guidance, no extra cost). It starts from a demo checkpoint, by default the last
    one `examples/aloha_sim/demo.py` writes, and normalizes with the stats that checkpoint carries; set both paths for
    another checkpoint:

        HF_LEROBOT_HOME=data/aloha_sim/demo/lerobot uv run scripts/train.py pi0_aloha_sim_demo_rtc --exp-name=rtc \\
            --weight-loader.params-path=<checkpoint>/params --data.assets.assets-dir=<checkpoint>/assets
    """
    checkpoint = f"data/aloha_sim/demo/checkpoints/{demo.name}/demo/{demo.num_train_steps - 1}"
    return dataclasses.replace(
        demo,
        name="pi0_aloha_sim_demo_rtc",
        model=dataclasses.replace(demo.model, training_rtc_max_delay=8),
        weight_loader=weight_loaders.CheckpointWeightLoader(f"{checkpoint}/params"),
        data=dataclasses.replace(demo.data, assets=AssetsConfig(assets_dir=f"{checkpoint}/assets")),
        num_train_steps=2_000,
        lr_schedule=_optimizer.CosineDecaySchedule(warmup_steps=50, peak_lr=3e-4, decay_steps=2_000, decay_lr=2e-5),
    )


# Derived from the registered demo config, so that it follows every change made there.
_CONFIGS.append(_aloha_sim_demo_rtc(next(config for config in _CONFIGS if config.name == "pi0_aloha_sim_demo")))

if len({config.name for config in _CONFIGS}) != len(_CONFIGS):
    raise ValueError("config names must be unique")
_CONFIGS_DICT = {config.name: config for config in _CONFIGS}


def get_config(config_name: str) -> TrainConfig:
    """The registered config called `config_name`."""
    if config_name not in _CONFIGS_DICT:
        closest = difflib.get_close_matches(config_name, _CONFIGS_DICT, n=1, cutoff=0.0)
        hint = f" Did you mean {closest[0]!r}?" if closest else ""
        raise ValueError(f"config {config_name!r} not found.{hint} Known configs: {sorted(_CONFIGS_DICT)}")
    return _CONFIGS_DICT[config_name]


def cli(args: Sequence[str] | None = None) -> TrainConfig:
    """Parses `<config-name> [--field value ...]`: the registered config with any field overridden."""
    return tyro.extras.overridable_config_cli(
        {name: (name, config) for name, config in _CONFIGS_DICT.items()}, args=args
    )
