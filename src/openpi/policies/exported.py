"""Exported models: a trained model's action sampling saved as a `jax.export` artefact, served without model code.

An exported model is a directory (local, s3:// or gs://):

    metadata.json                      format name and version, model facts, file checksums, versions
    sample_actions.jax_export          serialized `jax.export` of `(params, observation, noise) -> actions`
    params/                            orbax checkpoint `{"params": <param tree>}` (the `params/` layout of checkpoints)
    processors/<name>/norm_stats.json  normalization stats for each robot / dataset the model was trained on
    tokenizer.model                    (optional) the sentencepiece prompt tokenizer; default: PaliGemma's

The computation has a symbolic batch dimension and takes the weights as arguments (they are not baked in), and is
lowered for CPU and CUDA both, so one artefact serves on either. Loading uses only `jax.export.deserialize` and orbax;
no model code is imported. Noise is drawn outside the computation exactly as `Pi0.sample_actions` draws it, so the
same rng gives the same actions as the live model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import hashlib
import importlib.metadata
import json
import logging
import os
import pathlib
import shutil
from typing import Any

import flax.nnx as nnx
import jax
from jax import export as jax_export
import jax.numpy as jnp
import orbax.checkpoint as ocp

from openpi import transforms as _transforms
from openpi.models import model as _model
from openpi.models import tokenizer as _tokenizer
from openpi.shared import download
from openpi.shared import fileio as _fileio
from openpi.shared import normalize as _normalize

logger = logging.getLogger(__name__)

FORMAT_NAME = "openpi-exported-model"
FORMAT_VERSION = 1
DEFAULT_PLATFORMS = ("cpu", "cuda")

METADATA_FILE = "metadata.json"
SAMPLER_FILE = "sample_actions.jax_export"
PARAMS_DIR = "params"
PROCESSORS_DIR = "processors"
TOKENIZER_FILE = "tokenizer.model"


class ExportedModelError(ValueError):
    """An exported model directory is incomplete, corrupt, of another format version, or used wrongly."""


def export_model(
    config: _model.BaseModelConfig,
    params: _model.at.Params,
    out_dir: str | os.PathLike,
    *,
    processors: Mapping[str, Mapping[str, _normalize.NormStats]],
    num_steps: int = 10,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    tokenizer_model: bytes | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Writes the exported model of `config` with `params` (as `restore_params` returns) to `out_dir`.

    `processors` maps each processor name (a relative path such as `trossen` or `lerobot/aloha_sim`) to its norm
    stats. `tokenizer_model` is the serialized sentencepiece model of the prompt tokenizer, when it is not
    PaliGemma's. The directory is assembled under a temporary name and
    renamed into place, so a crash never leaves a partial artefact at `out_dir`.
    """
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"out_dir: {out_dir} already exists (pass overwrite=True to replace it)")
    if num_steps < 1:
        raise ValueError(f"num_steps: expected >= 1, got {num_steps}")
    for name in processors:
        parts = name.split("/")
        if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"processors: expected relative names like 'trossen' or 'org/dataset', got {name!r}")

    params = nnx.to_pure_dict(nnx.state(config.load(params)))
    exported = _export_sampler(config, params, num_steps=num_steps, platforms=platforms)
    serialized = exported.serialize()

    staging = _fileio.staging_dir(out_dir.parent, f".{out_dir.name}.tmp-")
    try:
        (staging / SAMPLER_FILE).write_bytes(serialized)
        with ocp.PyTreeCheckpointer() as checkpointer:
            checkpointer.save(staging / PARAMS_DIR, {"params": params})
        for name, norm_stats in processors.items():
            _normalize.save(staging / PROCESSORS_DIR / name, norm_stats)
        if tokenizer_model is not None:
            (staging / TOKENIZER_FILE).write_bytes(tokenizer_model)
        metadata = _metadata(config, exported, num_steps=num_steps, sampler_sha256=hashlib.sha256(serialized))
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Exported %s model to %s (processors: %s)", metadata["model_type"], out_dir, sorted(processors))
    return out_dir


def _export_sampler(
    config: _model.BaseModelConfig,
    params: _model.at.Params,
    *,
    num_steps: int,
    platforms: Sequence[str],
) -> jax_export.Exported:
    def sample(params: _model.at.Params, observation: dict, noise: jax.Array) -> jax.Array:
        live = config.load(params, remove_extra_params=False)
        return live.sample_actions(None, _model.Observation.from_dict(observation), num_steps=num_steps, noise=noise)

    (batch,) = jax_export.symbolic_shape("batch")
    observation_spec, actions_spec = config.inputs_spec()

    def batch_polymorphic(spec: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((batch, *spec.shape[1:]), spec.dtype)

    observation_spec = jax.tree.map(batch_polymorphic, _sampler_inputs(observation_spec))
    params_spec = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), params)
    return jax_export.export(jax.jit(sample), platforms=tuple(platforms))(
        params_spec, observation_spec, batch_polymorphic(actions_spec)
    )


def _sampler_inputs(observation: _model.Observation) -> dict:
    """The observation as the exported computation takes it: model-resolution images plus the prompt tokens."""
    if observation.tokenized_prompt is None or observation.tokenized_prompt_mask is None:
        raise ExportedModelError("observation: the exported model needs tokenized_prompt and tokenized_prompt_mask")
    return {
        "image": dict(observation.images),
        "image_mask": dict(observation.image_masks),
        "state": observation.state,
        "tokenized_prompt": observation.tokenized_prompt,
        "tokenized_prompt_mask": observation.tokenized_prompt_mask,
    }


def _metadata(
    config: _model.BaseModelConfig, exported: jax_export.Exported, *, num_steps: int, sampler_sha256: Any
) -> dict[str, Any]:
    observation_spec, _ = config.inputs_spec()
    first_image = next(iter(observation_spec.images.values()))
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_type": config.model_type.value,
        "action_horizon": config.action_horizon,
        "action_dim": config.action_dim,
        "max_token_len": config.max_token_len,
        "image_keys": list(observation_spec.images),
        "image_resolution": list(first_image.shape[1:3]),
        "num_steps": num_steps,
        "platforms": list(exported.platforms),
        "calling_convention_version": exported.calling_convention_version,
        "sampler_sha256": sampler_sha256.hexdigest(),
        "versions": {"jax": jax.__version__, "openpi": _openpi_version()},
    }


def _openpi_version() -> str:
    try:
        return importlib.metadata.version("openpi")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class ExportedModel(_model.BaseModel):
    """An exported model loaded for inference: `sample_actions` runs the deserialized computation.

    It is an nnx module holding the weights as one `Param`, so `Policy` jits it like any other model. Build it with
    `ExportedModel.load(directory)`.
    """

    def __init__(
        self,
        exported: jax_export.Exported,
        params: _model.at.Params,
        metadata: dict[str, Any],
        norm_stats: dict[str, dict[str, _normalize.NormStats]],
        source: str,
        tokenizer_path: pathlib.Path | None = None,
    ) -> None:
        super().__init__(metadata["action_dim"], metadata["action_horizon"], metadata["max_token_len"])
        self.exported = exported
        self.params = nnx.Param(params)
        self.metadata = nnx.static(metadata)
        self._norm_stats = nnx.static(norm_stats)
        self._source = source
        self._tokenizer_path = tokenizer_path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ExportedModel:
        """Loads an exported model from a local, s3:// or gs:// directory, checking its format and integrity."""
        source = str(directory)
        local = download.maybe_download(source)
        metadata = _read_metadata(local, source)
        exported = _read_sampler(local, metadata, source)
        params = _read_params(local, input_avals(exported)[0], source)
        norm_stats = _read_processors(local, source)
        logger.info("Loaded exported %s model from %s", metadata["model_type"], source)
        tokenizer_path = local / TOKENIZER_FILE
        return cls(exported, params, metadata, norm_stats, source, tokenizer_path if tokenizer_path.is_file() else None)

    def processor_names(self) -> list[str]:
        """Names of the processors (norm stats) shipped with the model, sorted."""
        return sorted(self._norm_stats)

    def norm_stats(self, processor: str) -> dict[str, _normalize.NormStats]:
        if processor not in self._norm_stats:
            raise ExportedModelError(
                f"processor: {processor!r} not found in {self._source}; available: {self.processor_names()}"
            )
        return self._norm_stats[processor]

    def select_processor(self, requested: str | None = None, env_default: str | None = None) -> str:
        """The processor to use: `requested` if given; else `env_default` if the model has it; else the only one.

        Raises `ExportedModelError` listing the available names when none of these rules decides.
        """
        available = self.processor_names()
        if requested is not None:
            self.norm_stats(requested)
            return requested
        if env_default is not None and env_default in available:
            return env_default
        if len(available) == 1:
            return available[0]
        if not available:
            raise ExportedModelError(f"{self._source}: the exported model has no processors (norm stats)")
        reason = f"the environment's default {env_default!r} is not among them" if env_default else "none was chosen"
        raise ExportedModelError(
            f"{self._source} has {len(available)} processors and {reason}; choose one with --policy.processor "
            f"from: {available}"
        )

    def model_transforms(self) -> _transforms.Group:
        """The model's input transforms: resize images to its resolution, tokenize the prompt, pad the state."""
        height, width = self.metadata["image_resolution"]
        tokenizer = _tokenizer.PaligemmaTokenizer(self.max_token_len, path=self._tokenizer_path)
        return _transforms.Group(
            inputs=[
                _transforms.ResizeImages(height, width),
                _transforms.TokenizePrompt(tokenizer),
                _transforms.PadStatesAndActions(self.action_dim),
            ]
        )

    def compute_loss(self, rng, observation, actions, *, train=False):
        raise NotImplementedError("an exported model only samples actions; train from the original checkpoint")

    def sample_actions(
        self,
        rng: _model.at.KeyArrayLike,
        observation: _model.Observation,
        *,
        num_steps: int | None = None,
        noise: _model.Actions | None = None,
    ) -> _model.Actions:
        """Like `Pi0.sample_actions`; `num_steps` was fixed at export time and may only repeat that value."""
        if num_steps is not None and num_steps != self.metadata["num_steps"]:
            raise ExportedModelError(
                f"num_steps: this model was exported with {self.metadata['num_steps']} steps, got {num_steps}"
            )
        _, observation_avals, noise_aval = input_avals(self.exported)
        observation = _model.preprocess_observation(
            None,
            observation,
            image_keys=self.metadata["image_keys"],
            image_resolution=tuple(self.metadata["image_resolution"]),
        )
        inputs = _sampler_inputs(observation)
        batch_size = observation.state.shape[0]
        if noise is None:
            noise = jax.random.normal(rng, (batch_size, self.action_horizon, self.action_dim))
        inputs = _conform(inputs, observation_avals, "observation")
        noise = _conform(noise, noise_aval, "noise")
        return self.exported.call(self.params.get_value(), inputs, noise)


def input_avals(exported: jax_export.Exported) -> tuple[Any, Any, Any]:
    """Shapes and dtypes the computation takes: `(params, observation, noise)`, batch axes symbolic."""
    args, _ = jax.tree.unflatten(exported.in_tree, exported.in_avals)
    return args


def _conform(tree: Any, avals: Any, name: str) -> Any:
    """Casts `tree`'s leaves to the exported dtypes after checking their shapes (all but the batch axis)."""
    paths_and_leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    aval_by_path = dict(jax.tree_util.tree_flatten_with_path(avals)[0])
    if set(aval_by_path) != {path for path, _ in paths_and_leaves}:
        raise ExportedModelError(
            f"{name}: expected entries {sorted(map(jax.tree_util.keystr, aval_by_path))}, "
            f"got {sorted(jax.tree_util.keystr(path) for path, _ in paths_and_leaves)}"
        )
    conformed = []
    for path, leaf in paths_and_leaves:
        aval = aval_by_path[path]
        expected = aval.shape[1:]
        if len(leaf.shape) != len(aval.shape) or tuple(leaf.shape[1:]) != tuple(expected):
            raise ExportedModelError(
                f"{name}{jax.tree_util.keystr(path)}: expected shape (batch, {', '.join(map(str, expected))}), "
                f"got {tuple(leaf.shape)}"
            )
        conformed.append(jnp.asarray(leaf, aval.dtype))
    return jax.tree.unflatten(jax.tree.structure(tree), conformed)


def _read_metadata(local: pathlib.Path, source: str) -> dict[str, Any]:
    path = local / METADATA_FILE
    if not path.is_file():
        raise ExportedModelError(f"{source}: not an exported openpi model ({METADATA_FILE} is missing)")
    try:
        metadata = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportedModelError(f"{source}/{METADATA_FILE}: not valid JSON ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ExportedModelError(f"{source}/{METADATA_FILE}: expected 'format': {FORMAT_NAME!r}")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        hint = "; upgrade openpi to read it" if newer else ""
        raise ExportedModelError(
            f"{source}: exported model format version {version!r}, but this openpi reads version {FORMAT_VERSION}{hint}"
        )
    expected_types = {
        "model_type": str,
        "action_horizon": int,
        "action_dim": int,
        "max_token_len": int,
        "image_keys": list,
        "image_resolution": list,
        "num_steps": int,
        "platforms": list,
        "sampler_sha256": str,
    }
    for field, kind in expected_types.items():
        if not isinstance(metadata.get(field), kind):
            raise ExportedModelError(
                f"{source}/{METADATA_FILE}: field {field!r} expected a {kind.__name__}, got {metadata.get(field)!r}"
            )
    return metadata


def _read_sampler(local: pathlib.Path, metadata: dict[str, Any], source: str) -> jax_export.Exported:
    path = local / SAMPLER_FILE
    if not path.is_file():
        raise ExportedModelError(f"{source}: {SAMPLER_FILE} is missing")
    serialized = path.read_bytes()
    if hashlib.sha256(serialized).hexdigest() != metadata["sampler_sha256"]:
        raise ExportedModelError(f"{source}/{SAMPLER_FILE}: corrupt (its sha256 does not match {METADATA_FILE})")
    try:
        exported = jax_export.deserialize(bytearray(serialized))
    except Exception as error:  # deserialization reports version skew and damage with many exception types
        raise ExportedModelError(
            f"{source}/{SAMPLER_FILE}: cannot be deserialized by jax {jax.__version__} "
            f"(exported with jax {metadata.get('versions', {}).get('jax', 'unknown')}): {error}"
        ) from error
    platform = "cuda" if jax.default_backend() == "gpu" else jax.default_backend()
    if platform not in exported.platforms:
        raise ExportedModelError(
            f"{source}: exported for platforms {list(exported.platforms)}, which do not include {platform!r}"
        )
    return exported


def _read_params(local: pathlib.Path, expected: Any, source: str) -> _model.at.Params:
    path = local / PARAMS_DIR
    if not path.is_dir():
        raise ExportedModelError(f"{source}: {PARAMS_DIR}/ is missing")
    try:
        params = _model.restore_params(path)
    except Exception as error:  # orbax and tensorstore raise many kinds of errors for damaged files
        raise ExportedModelError(f"{source}/{PARAMS_DIR}: cannot be read: {error}") from error
    try:
        _model.check_param_tree(expected, params)
    except ValueError as error:
        raise ExportedModelError(f"{source}/{PARAMS_DIR}: {error}") from None
    flat_expected = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    for path_key, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if leaf.dtype != flat_expected[path_key].dtype:
            raise ExportedModelError(
                f"{source}/{PARAMS_DIR}{jax.tree_util.keystr(path_key)}: expected dtype "
                f"{flat_expected[path_key].dtype}, got {leaf.dtype}"
            )
    return params


def _read_processors(local: pathlib.Path, source: str) -> dict[str, dict[str, _normalize.NormStats]]:
    root = local / PROCESSORS_DIR
    files = root.rglob(_normalize.NORM_STATS_FILENAME) if root.is_dir() else []
    names = sorted(path.parent.relative_to(root).as_posix() for path in files)
    result = {}
    for name in names:
        try:
            result[name] = _normalize.load(root / name)
        except (FileNotFoundError, ValueError) as error:
            raise ExportedModelError(f"{source}/{PROCESSORS_DIR}/{name}: {error}") from None
    return result
