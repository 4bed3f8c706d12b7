"""The original openpi's exported models (the README's `s3://openpi-assets/exported/<name>/model`), served like ours.

Such a model directory holds:

    graph                                        serialized `jax.export` of the sampler (below)
    <orbax PyTree checkpoint files>              `{"params": <the param tree the sampler takes>}`, beside `graph`
    processors/<name>/<sub>/norm_stats.msgpack   flax-msgpack norm stats of each robot / dataset the model knows

The sampler is `(params, rng_key_data, example, sample_kwargs) -> {"actions": [horizon, dim]}` on ONE observation:
`example` is `{"image": {<cam>: uint8 [h, w, 3], "<cam>_mask": [] }, "state": [d], "prompt_tokens": [l],
"mask_input": [l]}` (dtypes as the graph declares them) and `sample_kwargs` is `{"num_steps": []}`. Our `Policy`
samples batches, so `OriginalExportedModel` runs the graph once per observation of a batch (`jax.lax.map`: the
exported call has no batching rule), each with its own key; a batch of one uses the policy's key itself, as the
original did.

A processor's norm stats are one file with `input_norms.state` and `output_norms.actions`, or one file per key
with plain `mean` / `std` (`q01` / `q99` optional); either way the first stats in the sorted order of `<sub>` are
the actions', the next the state's. They normalize by z-score. Prompts are tokenized with PaliGemma's tokenizer
(downloaded like any other asset), unless a `tokenizer.model` lies beside `graph`.

Only pi0 graphs (output `actions`) are served: the README's exported models are all pi0. A pi0-FAST graph (output
`output_tokens`) is refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
import logging
import pathlib
from typing import Any

import flax.serialization
import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from openpi import transforms as _transforms
from openpi.models import model as _model
from openpi.models import tokenizer as _tokenizer
from openpi.policies import exported as _exported
from openpi.shared import normalize as _normalize

logger = logging.getLogger(__name__)

FORMAT_NAME = "openpi-original-exported-model"
GRAPH_FILE = "graph"
PROCESSORS_DIR = "processors"
NORM_STATS_FILE = "norm_stats.msgpack"
# Files orbax writes at the root of a PyTree checkpoint (a directory holds at least one of them).
_CHECKPOINT_FILES = ("_METADATA", "_CHECKPOINT_METADATA", "checkpoint", "manifest.ocdbt")
# The original's number of flow steps when none is asked for.
DEFAULT_NUM_STEPS = 10

_MASK_SUFFIX = "_mask"
# Inputs of a pi0 example besides the images, and the observation field each one is read from.
_EXAMPLE_FIELDS = {
    "state": "state",
    "prompt_tokens": "tokenized_prompt",
    "mask_input": "tokenized_prompt_mask",
}
_SAMPLE_KWARGS = ("num_steps",)


def looks_original(local: pathlib.Path) -> bool:
    """Whether the directory has the original's layout: a `graph` file, or an orbax checkpoint at its root with
    msgpack processors (so that a directory missing its `graph` is named as such)."""
    if (local / GRAPH_FILE).is_file():
        return True
    has_checkpoint = any((local / name).exists() for name in _CHECKPOINT_FILES)
    return has_checkpoint and any((local / PROCESSORS_DIR).glob(f"*/*/{NORM_STATS_FILE}"))


def load(local: pathlib.Path, source: str) -> OriginalExportedModel:
    """Loads the model in the original's layout at `local` (downloaded from `source`), checking that the graph is
    a pi0 sampler of the expected inputs and that the checkpoint holds the params it takes."""
    exported = _read_graph(local, source)
    params_spec, key_spec, example_spec, sample_spec = _exported.input_avals(exported)
    cameras, resolution = _check_example_spec(example_spec, source)
    _check_sample_spec(sample_spec, source)
    if len(key_spec.shape) != 1:
        raise _exported.ExportedModelError(
            f"{source}/{GRAPH_FILE}: expected rng key data of shape (n,), got {tuple(key_spec.shape)}"
        )
    action_horizon, action_dim = _action_shape(exported, source)
    metadata = {
        "format": FORMAT_NAME,
        "model_type": _model.ModelType.PI0.value,
        "action_horizon": action_horizon,
        "action_dim": action_dim,
        "max_token_len": int(example_spec["prompt_tokens"].shape[0]),
        "image_keys": cameras,
        "image_resolution": resolution,
        "state_dim": int(example_spec["state"].shape[0]),
        "platforms": list(exported.platforms),
    }
    params = _read_params(local, params_spec, source)
    logger.info("Loaded the original's exported pi0 model from %s", source)
    return OriginalExportedModel(exported, params, metadata, {}, source, local)


class OriginalExportedModel(_exported.ExportedModel):
    """A pi0 exported by the original openpi: samples action chunks `[b, horizon, dim]`, one graph call per
    observation. Processors are read when asked for, so that one unreadable processor spoils only itself."""

    def processor_names(self) -> list[str]:
        root = self._directory / PROCESSORS_DIR
        return sorted(path.name for path in root.iterdir() if path.is_dir()) if root.is_dir() else []

    def norm_stats(self, processor: str) -> dict[str, _normalize.NormStats]:
        if processor not in self.processor_names():
            raise _exported.ExportedModelError(
                f"processor: {processor!r} not found in {self._source}; available: {self.processor_names()}"
            )
        return _read_processor(self._directory / PROCESSORS_DIR / processor, f"{self._source}/{PROCESSORS_DIR}")

    def model_transforms(self) -> _transforms.Group:
        """Resize images to the graph's resolution, tokenize the prompt, pad the state to the graph's width."""
        return _exported.flow_model_transforms(
            self.metadata["image_resolution"],
            _tokenizer.PaligemmaTokenizer(self.max_token_len, path=self._tokenizer_path()),
            state_dim=self.metadata["state_dim"],
        )

    def sample_actions(
        self, rng: _model.at.KeyArrayLike, observation: _model.Observation, *, num_steps: int | None = None
    ) -> _model.Actions:
        """Like `Pi0.sample_actions` (the graph draws the noise from `rng`); `num_steps` defaults to the original's
        10."""
        _, key_spec, example_spec, sample_spec = _exported.input_avals(self.exported)
        if rng is None:
            raise _exported.ExportedModelError("rng: required, the exported graph draws its noise from it")
        batch_size = observation.state.shape[0]
        key_data = _key_data(rng[None] if batch_size == 1 else jax.random.split(rng, batch_size))
        if key_data.shape[1:] != key_spec.shape:
            raise _exported.ExportedModelError(
                f"rng: expected a key of the graph's implementation (key data {tuple(key_spec.shape)}), got "
                f"{tuple(key_data.shape[1:])}"
            )
        key_data = key_data.astype(key_spec.dtype)
        example = _exported.conform(self._example(observation), _batched(example_spec, batch_size), "example")
        if num_steps is not None and "num_steps" not in sample_spec:
            raise _exported.ExportedModelError("num_steps: this exported graph takes no number of flow steps")
        sample_kwargs = {"num_steps": DEFAULT_NUM_STEPS if num_steps is None else num_steps}
        sample_kwargs = {name: jnp.asarray(sample_kwargs[name], spec.dtype) for name, spec in sample_spec.items()}
        params = self.params.get_value()

        def sample_one(inputs: tuple[jax.Array, dict]) -> dict:
            return self.exported.call(params, inputs[0], inputs[1], sample_kwargs)

        return jax.lax.map(sample_one, (key_data, example))["actions"]

    def _example(self, observation: _model.Observation) -> dict:
        """The graph's inputs of a batch: uint8 images of the graph's cameras and resolution, their masks, state and
        prompt."""
        observation = _model.preprocess_observation(
            None,
            observation,
            image_keys=self.metadata["image_keys"],
            image_resolution=tuple(self.metadata["image_resolution"]),
        )
        images = {}
        for camera, image in observation.images.items():
            images[camera] = _to_uint8(image)
            images[camera + _MASK_SUFFIX] = observation.image_masks[camera]
        example = {"image": images}
        for name, field in _EXAMPLE_FIELDS.items():
            value = getattr(observation, field)
            if value is None:
                raise _exported.ExportedModelError(f"observation: the exported graph needs {field} (for {name!r})")
            example[name] = value
        return example


def _to_uint8(image: jax.Array) -> jax.Array:
    """A [-1, 1] float image back as the uint8 pixels it was made from (rounded, so the round trip is exact)."""
    if image.dtype == jnp.uint8:
        return image
    return jnp.round(jnp.clip((image + 1.0) * 127.5, 0.0, 255.0)).astype(jnp.uint8)


def _key_data(keys: jax.Array) -> jax.Array:
    return jax.random.key_data(keys) if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys


def _batched(spec: Any, batch_size: int) -> Any:
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct((batch_size, *leaf.shape), leaf.dtype), spec)


def _read_graph(local: pathlib.Path, source: str) -> jax_export.Exported:
    path = local / GRAPH_FILE
    if not path.is_file():
        raise _exported.ExportedModelError(
            f"{source}: {GRAPH_FILE} is missing (the original's exported models keep their serialized sampler there)"
        )
    try:
        exported = jax_export.deserialize(bytearray(path.read_bytes()))
    except Exception as error:  # deserialization reports version skew and damage with many exception types
        raise _exported.ExportedModelError(
            f"{source}/{GRAPH_FILE}: cannot be deserialized by jax {jax.__version__}: {error}"
        ) from error
    _exported.check_platform(exported, source)
    args, kwargs = jax.tree.unflatten(exported.in_tree, exported.in_avals)
    if len(args) != 4 or kwargs:
        raise _exported.ExportedModelError(
            f"{source}/{GRAPH_FILE}: expected a sampler of (params, rng_key_data, example, sample_kwargs), got "
            f"{len(args)} positional and {len(kwargs)} keyword arguments"
        )
    return exported


def _check_example_spec(spec: Any, source: str) -> tuple[list[str], list[int]]:
    """Checks the graph's example against the original's pi0 layout; returns its cameras and image resolution."""
    where = f"{source}/{GRAPH_FILE}: example"
    if not isinstance(spec, Mapping) or not isinstance(spec.get("image"), Mapping):
        raise _exported.ExportedModelError(f"{where}: expected a dict with an 'image' dict, got {spec!r}")
    expected = {"image", *_EXAMPLE_FIELDS}
    if set(spec) != expected:
        hint = " (pi0-FAST graphs are not supported)" if "mask_ar" in spec else ""
        raise _exported.ExportedModelError(f"{where}: expected inputs {sorted(expected)}, got {sorted(spec)}{hint}")
    for name in _EXAMPLE_FIELDS:
        if len(spec[name].shape) != 1:
            raise _exported.ExportedModelError(f"{where}[{name!r}]: expected a vector, got {spec[name]}")
    if spec["prompt_tokens"].shape != spec["mask_input"].shape:
        raise _exported.ExportedModelError(
            f"{where}: expected 'prompt_tokens' and 'mask_input' of one length, got {spec['prompt_tokens']} and "
            f"{spec['mask_input']}"
        )
    cameras = [name for name in spec["image"] if not name.endswith(_MASK_SUFFIX)]
    if not cameras:
        raise _exported.ExportedModelError(f"{where}['image']: expected cameras, got {sorted(spec['image'])}")
    if set(spec["image"]) != {*cameras, *(camera + _MASK_SUFFIX for camera in cameras)}:
        raise _exported.ExportedModelError(
            f"{where}['image']: expected each camera with its '<camera>{_MASK_SUFFIX}', got {sorted(spec['image'])}"
        )
    shapes = {tuple(spec["image"][camera].shape) for camera in cameras}
    shape = shapes.pop()
    if shapes or len(shape) != 3 or shape[2] != 3:
        raise _exported.ExportedModelError(
            f"{where}['image']: expected all cameras of one shape (height, width, 3), got "
            f"{ {camera: spec['image'][camera].shape for camera in cameras} }"
        )
    for camera in cameras:
        if spec["image"][camera].dtype != jnp.uint8 or spec["image"][camera + _MASK_SUFFIX].shape != ():
            raise _exported.ExportedModelError(
                f"{where}['image'][{camera!r}]: expected uint8 pixels and a scalar mask, got "
                f"{spec['image'][camera]} and {spec['image'][camera + _MASK_SUFFIX]}"
            )
    return cameras, [int(shape[0]), int(shape[1])]


def _check_sample_spec(spec: Any, source: str) -> None:
    if not isinstance(spec, Mapping) or not set(spec) <= set(_SAMPLE_KWARGS):
        raise _exported.ExportedModelError(
            f"{source}/{GRAPH_FILE}: expected sample_kwargs among {list(_SAMPLE_KWARGS)}, got {spec!r}"
        )
    for name, aval in spec.items():
        if aval.shape != ():
            raise _exported.ExportedModelError(
                f"{source}/{GRAPH_FILE}: sample_kwargs[{name!r}]: expected a scalar, got {aval}"
            )


def _action_shape(exported: jax_export.Exported, source: str) -> tuple[int, int]:
    outputs = jax.tree.unflatten(exported.out_tree, exported.out_avals)
    if isinstance(outputs, Mapping) and "output_tokens" in outputs:
        raise _exported.ExportedModelError(
            f"{source}/{GRAPH_FILE}: a pi0-FAST graph (it outputs 'output_tokens'); only the original's pi0 exports "
            "(output 'actions') are supported"
        )
    if not isinstance(outputs, Mapping) or "actions" not in outputs or len(outputs["actions"].shape) != 2:
        raise _exported.ExportedModelError(
            f"{source}/{GRAPH_FILE}: expected outputs {{'actions': [horizon, dim]}}, got {outputs!r}"
        )
    horizon, dim = outputs["actions"].shape
    return int(horizon), int(dim)


def _read_params(local: pathlib.Path, spec: Any, source: str) -> _model.at.Params:
    """The params the graph takes, read from the orbax checkpoint at `local` in the graph's dtypes (other items
    the checkpoint may hold are left unread)."""
    where = f"{source} (orbax checkpoint {{'params': ...}} beside {GRAPH_FILE})"
    if not any((local / name).exists() for name in _CHECKPOINT_FILES):
        raise _exported.ExportedModelError(f"{where}: no checkpoint found (none of {list(_CHECKPOINT_FILES)} is there)")
    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            metadata = checkpointer.metadata(local)
    except Exception as error:  # orbax raises many kinds of errors for damaged files
        raise _exported.ExportedModelError(f"{where}: cannot be read: {error}") from error
    stored = getattr(getattr(metadata, "item_metadata", metadata), "tree", metadata)
    if not isinstance(stored, Mapping):
        raise _exported.ExportedModelError(f"{where}: cannot be read (orbax finds no tree metadata in it)")
    if "params" not in stored:
        raise _exported.ExportedModelError(f"{where}: expected a top-level 'params' item, got {sorted(stored)}")
    try:
        _model.check_param_tree(spec, _known_leaves(stored["params"], spec))
    except ValueError as error:
        raise _exported.ExportedModelError(f"{where}: {error}") from None
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    item = {"params": spec}
    restore_args = jax.tree.map(lambda leaf: ocp.ArrayRestoreArgs(dtype=leaf.dtype, sharding=sharding), item)
    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            restored = checkpointer.restore(
                local, ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
            )
    except Exception as error:  # orbax and tensorstore raise many kinds of errors for damaged files
        raise _exported.ExportedModelError(f"{where}: cannot be read: {error}") from error
    return restored["params"]


def _known_leaves(stored: Any, spec: Any) -> Any:
    """The stored tree cut to the branches `spec` has (extra stored entries are no problem; the graph ignores
    them), keeping stored leaves where `spec` expects a subtree so that the mismatch is named."""
    if not isinstance(stored, Mapping) or not isinstance(spec, Mapping):
        return stored
    return {key: _known_leaves(value, spec[key]) for key, value in stored.items() if key in spec}


def _read_processor(directory: pathlib.Path, where: str) -> dict[str, _normalize.NormStats]:
    """The `actions` and `state` norm stats of one processor directory (see the module docstring)."""
    where = f"{where}/{directory.name}"
    files = sorted(directory.glob(f"*/{NORM_STATS_FILE}"))
    if not files:
        raise _exported.ExportedModelError(f"{where}: no <sub>/{NORM_STATS_FILE} found")
    stats = []
    for path in files:
        file_where = f"{where}/{path.parent.name}/{NORM_STATS_FILE}"
        try:
            content = flax.serialization.msgpack_restore(path.read_bytes())
        except Exception as error:  # msgpack reports damage with many exception types
            raise _exported.ExportedModelError(f"{file_where}: not flax msgpack ({error})") from error
        if not isinstance(content, Mapping):
            raise _exported.ExportedModelError(f"{file_where}: expected a dict, got {type(content).__name__}")
        if "input_norms" in content or "output_norms" in content:
            stats.append(_norm_stats(_entry(content, ("output_norms", "actions"), file_where), file_where))
            stats.append(_norm_stats(_entry(content, ("input_norms", "state"), file_where), file_where))
        else:
            stats.append(_norm_stats(content, file_where))
    if len(stats) < 2:
        raise _exported.ExportedModelError(
            f"{where}: expected the norm stats of actions and state (an 'input_norms' / 'output_norms' file, or "
            f"two plain ones), found one in {[path.parent.name for path in files]}"
        )
    if len(stats) > 2:
        logger.warning("%s: %d norm stats found; using the first two (actions, state)", where, len(stats))
    return {"actions": stats[0], "state": stats[1]}


def _entry(content: Mapping, keys: tuple[str, ...], where: str) -> Any:
    for depth, key in enumerate(keys):
        if not isinstance(content, Mapping) or key not in content:
            raise _exported.ExportedModelError(f"{where}: missing {'.'.join(keys[: depth + 1])}")
        content = content[key]
    return content


def _norm_stats(content: Any, where: str) -> _normalize.NormStats:
    if not isinstance(content, Mapping) or not {"mean", "std"} <= set(content):
        found = sorted(content) if isinstance(content, Mapping) else type(content).__name__
        raise _exported.ExportedModelError(
            f"{where}: expected 'mean' and 'std' (and optionally q01 / q99), got {found}"
        )
    arrays = {}
    for name in ("mean", "std", "q01", "q99"):
        if content.get(name) is None:
            continue
        value = np.asarray(content[name], dtype=np.float64)
        if value.ndim != 1:
            raise _exported.ExportedModelError(f"{where}: '{name}' expected a vector, got shape {value.shape}")
        arrays[name] = value
    shapes = {value.shape for value in arrays.values()}
    if len(shapes) != 1:
        raise _exported.ExportedModelError(
            f"{where}: expected stats of one length, got { {name: value.shape for name, value in arrays.items()} }"
        )
    return _normalize.NormStats(**arrays)
