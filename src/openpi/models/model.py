"""Model-agnostic types and helpers: observations, actions, model configs and checkpoint param loading."""

import abc
from collections.abc import Sequence
import dataclasses
import enum
import logging
import pathlib
import typing
from typing import Annotated, Generic, Literal, TypeAlias, TypeVar

from flax import struct
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tyro

from openpi.shared import array_typing as at
from openpi.shared import image_tools
from openpi.shared import tree as _tree

logger = logging.getLogger("openpi")

ArrayT = TypeVar("ArrayT", at.Array, jax.ShapeDtypeStruct, np.ndarray)

# Camera names the model expects, in the order their tokens enter the prefix.
IMAGE_KEYS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
IMAGE_RESOLUTION = (224, 224)


class ModelType(enum.Enum):
    """Model families: pi0, pi0.5 (`Pi0Config(pi05=True)`) and pi0-FAST (`Pi0FASTConfig`)."""

    PI0 = "pi0"
    PI0_FAST = "pi0_fast"
    PI05 = "pi05"


@struct.dataclass
class Observation(Generic[ArrayT]):
    """One batch of model inputs. Images are float32 in [-1, 1]; masks say which cameras are present."""

    images: dict[str, at.Float[ArrayT, "*b h w c"]]
    image_masks: dict[str, at.Bool[ArrayT, "*b"]]
    state: at.Float[ArrayT, "*b s"]
    tokenized_prompt: at.Int[ArrayT, "*b l"] | None = None
    tokenized_prompt_mask: at.Bool[ArrayT, "*b l"] | None = None
    # pi0-FAST only: which prompt tokens start a new causal block (the action tokens) and which are loss targets.
    token_ar_mask: at.Int[ArrayT, "*b l"] | None = None
    token_loss_mask: at.Bool[ArrayT, "*b l"] | None = None

    @classmethod
    def from_dict(cls, data: at.PyTree[ArrayT]) -> "Observation[ArrayT]":
        """Builds an observation from the data pipeline's dict (``image``, ``image_mask``, ``state``, ...).

        uint8 images are converted to float32 in [-1, 1].
        """
        for key in ("image", "image_mask", "state"):
            if key not in data:
                raise ValueError(f"observation: missing key {key!r}; got keys {sorted(data)}")
        if ("tokenized_prompt" in data) != ("tokenized_prompt_mask" in data):
            raise ValueError("observation: tokenized_prompt and tokenized_prompt_mask must be given together")
        images = {}
        for name, image in data["image"].items():
            if image.dtype == np.uint8:
                image = image.astype(np.float32) / 255.0 * 2.0 - 1.0
            images[name] = image
        return cls(
            images=images,
            image_masks=dict(data["image_mask"]),
            # Normalization yields float64 (the stats are float64); the model computes in float32 or below.
            state=data["state"].astype(np.float32),
            tokenized_prompt=data.get("tokenized_prompt"),
            tokenized_prompt_mask=data.get("tokenized_prompt_mask"),
            token_ar_mask=data.get("token_ar_mask"),
            token_loss_mask=data.get("token_loss_mask"),
        )

    def to_dict(self) -> at.PyTree[ArrayT]:
        """Inverse of ``from_dict`` (images stay float)."""
        result = dataclasses.asdict(self)
        result["image"] = result.pop("images")
        result["image_mask"] = result.pop("image_masks")
        return {key: value for key, value in result.items() if value is not None}


# Action chunks: [*batch, action_horizon, action_dim].
Actions: TypeAlias = at.Float[ArrayT, "*b ah ad"]

# Training-time image augmentation: "pi0" is the original's (random 95 % crop and ±5° rotation on cameras that are
# not on a wrist, colour jitter on all), "color" only the colour jitter, "none" nothing.
Augmentation: TypeAlias = Literal["pi0", "color", "none"]
AUGMENTATIONS: tuple[str, ...] = typing.get_args(Augmentation)


def preprocess_observation(
    rng: at.KeyArrayLike | None,
    observation: Observation,
    *,
    train: bool = False,
    image_keys: Sequence[str] = IMAGE_KEYS,
    image_resolution: tuple[int, int] = IMAGE_RESOLUTION,
    augmentation: Augmentation = "pi0",
) -> Observation:
    """Keeps the cameras in `image_keys` (others are dropped), resizes them to the model resolution
    (aspect-preserving pad), augments them when training (see `Augmentation`), and fills in missing image masks
    (present by default)."""
    missing = set(image_keys) - set(observation.images)
    if missing:
        raise ValueError(
            f"observation.images: missing cameras {sorted(missing)}; expected {list(image_keys)}, "
            f"got {sorted(observation.images)}"
        )
    batch_shape = observation.state.shape[:-1]
    images = {}
    for index, key in enumerate(image_keys):
        image = observation.images[key]
        if tuple(image.shape[1:3]) != tuple(image_resolution):
            image = image_tools.resize_with_pad(image, *image_resolution)
        if train and augmentation != "none":
            if rng is None:
                raise ValueError("preprocess_observation: train=True needs an rng for augmentation")
            geometric = augmentation == "pi0" and "wrist" not in key
            image_rngs = jax.random.split(jax.random.fold_in(rng, index), image.shape[0])
            augment = jax.vmap(lambda r, im, geometric=geometric: image_tools.augment_image(r, im, geometric=geometric))
            image = augment(image_rngs, image / 2.0 + 0.5) * 2.0 - 1.0
        images[key] = image
    masks = {
        key: jnp.asarray(observation.image_masks[key])
        if key in observation.image_masks
        else jnp.ones(batch_shape, dtype=jnp.bool_)
        for key in images
    }
    return dataclasses.replace(observation, images=images, image_masks=masks)


# Where layer stacks are compiled unrolled instead of as loops (`stacking.scan_stack`; the stored parameters keep their
# stacked layout either way): nowhere, everywhere, or (the default) only in the pass that sampling repeats per step
# (pi0's denoising steps, pi0-FAST's decoding steps), while training, the vision tower and the prefix keep their loops.
# Unrolled, a step slices no parameters per layer and XLA compiles it straight-line: on a GPU one command buffer (CUDA
# graph) per step instead of ~240 launches for full pi0; on a CPU about a third off pi0-FAST's cost per generated token
# with bfloat16 weights, pi0's sampling within the noise (bench/RESULTS.md), for a few seconds more compile.
UnrollLayers: TypeAlias = bool | Literal["sampling"]


def check_model_fields(dtype: str, image_keys: Sequence[str], augmentation: str, unroll_layers: UnrollLayers) -> None:
    """Validates the fields every model config here shares: compute dtype, cameras, augmentation, unrolling."""
    if dtype not in ("bfloat16", "float32"):
        raise ValueError(f"dtype: expected 'bfloat16' or 'float32', got {dtype!r}")
    if unroll_layers not in (True, False, "sampling"):
        raise ValueError(f"unroll_layers: expected True, False or 'sampling', got {unroll_layers!r}")
    if not image_keys or len(set(image_keys)) != len(image_keys):
        raise ValueError(f"image_keys: expected one or more distinct camera names, got {image_keys!r}")
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation: expected one of {AUGMENTATIONS}, got {augmentation!r}")


_Variant = TypeVar("_Variant")
# A config field naming a size variant ("gemma_2b", "So400m/14") or holding an explicit config of custom dims; on the
# command line (tyro) it is a plain name flag.
VariantFlag: TypeAlias = Annotated[str | _Variant, tyro.conf.arg(constructor=str)]


@dataclasses.dataclass(frozen=True)
class BaseModelConfig(abc.ABC):
    """Shared model config: sizes of the action chunk and prompt, plus construction and loading."""

    action_dim: int
    action_horizon: int
    max_token_len: int

    @property
    @abc.abstractmethod
    def model_type(self) -> ModelType: ...

    @abc.abstractmethod
    def create(self, rng: at.KeyArrayLike) -> "BaseModel":
        """Creates a freshly initialised model."""

    @abc.abstractmethod
    def inputs_spec(self, *, batch_size: int = 1) -> tuple[Observation, Actions]:
        """Shapes and dtypes of the model inputs (as ``jax.ShapeDtypeStruct``)."""

    def load(self, params: at.Params, *, remove_extra_params: bool = True) -> "BaseModel":
        """Creates a model holding ``params`` (a nested dict as ``restore_params`` returns)."""
        model = nnx.eval_shape(self.create, jax.random.key(0))
        graphdef, state = nnx.split(model)
        expected = nnx.to_pure_dict(state)
        if remove_extra_params:
            params = intersect_trees(expected, params)
        check_param_tree(expected, params)
        nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
        return nnx.merge(graphdef, state)

    def fake_obs(self, batch_size: int = 1) -> Observation:
        observation_spec, _ = self.inputs_spec(batch_size=batch_size)
        return jax.tree.map(lambda spec: jnp.ones(spec.shape, spec.dtype), observation_spec)

    def fake_act(self, batch_size: int = 1) -> Actions:
        _, action_spec = self.inputs_spec(batch_size=batch_size)
        return jnp.ones(action_spec.shape, action_spec.dtype)


class BaseModel(nnx.Module, abc.ABC):
    """A policy model: a training loss and an action sampler."""

    def __init__(self, action_dim: int, action_horizon: int, max_token_len: int):
        self.action_dim = action_dim
        self.action_horizon = action_horizon
        self.max_token_len = max_token_len

    @abc.abstractmethod
    def compute_loss(
        self, rng: at.KeyArrayLike, observation: Observation, actions: Actions, *, train: bool = False
    ) -> at.Float[at.Array, "*b ah"]: ...

    @abc.abstractmethod
    def sample_actions(self, rng: at.KeyArrayLike, observation: Observation, **kwargs) -> Actions: ...


# The original's name for the model base class, as code written from its README (`model: _model.Model`) spells it.
Model: TypeAlias = BaseModel


def intersect_trees(reference: dict, tree: dict) -> dict:
    """Keeps only the leaves of ``tree`` whose paths also exist in ``reference``."""
    reference_paths = set(_tree.flatten(reference))
    return _tree.unflatten({path: value for path, value in _tree.flatten(tree).items() if path in reference_paths})


def check_param_tree(expected: dict, got: dict) -> None:
    """Raises a ValueError naming every missing, unexpected or wrongly shaped parameter path."""
    flat_expected, flat_got = _tree.flatten(expected), _tree.flatten(got)
    problems = [f"missing {'/'.join(path)}" for path in flat_expected.keys() - flat_got.keys()]
    problems += [f"unexpected {'/'.join(path)}" for path in flat_got.keys() - flat_expected.keys()]
    for path in flat_expected.keys() & flat_got.keys():
        want, have = tuple(flat_expected[path].shape), tuple(np.shape(flat_got[path]))
        if want != have:
            problems.append(f"shape of {'/'.join(path)}: expected {want}, got {have}")
    if problems:
        shown = "\n  ".join(sorted(problems)[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"params do not match the model ({len(problems)} problems):\n  {shown}{more}")


def restore_params(
    params_path: pathlib.Path | str,
    *,
    restore_type: type[np.ndarray] | type[jax.Array] = jax.Array,
    dtype: jnp.dtype | str | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> at.Params:
    """Reads an original-layout orbax ``params/`` checkpoint (local, s3://, gs://, https://).

    Returns the nested param dict without the top-level ``"params"`` key. Leaves are cast to ``dtype`` when
    given; a trailing ``"value"`` level (checkpoints saved from an ``nnx.State``) is dropped.
    """
    from openpi.shared import download

    params_path = download.maybe_download(str(params_path)).resolve()
    if not params_path.exists():
        raise FileNotFoundError(f"params checkpoint not found: {params_path}")
    if restore_type is jax.Array and sharding is None:
        mesh = jax.sharding.Mesh(jax.devices(), ("x",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    with ocp.PyTreeCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(params_path)
        tree_metadata = getattr(metadata, "item_metadata", metadata)
        tree_metadata = getattr(tree_metadata, "tree", tree_metadata)
        if "params" not in tree_metadata:
            raise ValueError(f"{params_path}: expected a checkpoint with a top-level 'params' item")
        item = {"params": tree_metadata["params"]}
        if restore_type is jax.Array:
            restore_args = jax.tree.map(
                lambda _: ocp.ArrayRestoreArgs(sharding=sharding, restore_type=jax.Array, dtype=dtype), item
            )
        else:
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray, dtype=dtype), item)
        params = checkpointer.restore(params_path, ocp.args.PyTreeRestore(item=item, restore_args=restore_args))
    params = params["params"]

    flat = _tree.flatten(params)
    if flat and all(path[-1] == "value" for path in flat):
        params = _tree.unflatten({path[:-1]: value for path, value in flat.items()})
    return params
