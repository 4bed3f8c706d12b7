"""Exported models: a trained model's action sampling saved as a `jax.export` artefact, served without model code.

An exported model is a directory (local, s3:// or gs://):

    metadata.json                      format name and version, model type and facts, file checksums, versions
    sample_actions.jax_export          serialized `jax.export` of the sampler (below)
    params/                            orbax checkpoint `{"params": <param tree>}` (the `params/` layout of checkpoints)
    processors/<name>/norm_stats.json  normalization stats for each robot / dataset the model was trained on
    tokenizer.model                    the sentencepiece prompt tokenizer (optional for pi0 / pi0.5: PaliGemma's)
    fast_tokenizer/                    pi0-FAST only: the FAST action vocabulary (tokenizer.json, processor_config.json)

The sampler of pi0 and pi0.5 is `(params, observation, noise) -> actions [b, horizon, dim]`, the number of flow steps
fixed at export; noise is drawn outside the computation exactly as `Pi0.sample_actions` draws it. The sampler of
pi0-FAST is `(params, observation, rng_key_data, temperature) -> token ids [b, max_decoding_steps]` (as floats, like
`Pi0FAST.sample_actions`), the number of decoding steps fixed at export and the temperature free; the policy's output
transforms turn the tokens into actions with the shipped tokenizers, so nothing is downloaded to serve it. Either way
the same rng gives the same output as the live model.

The computation has a symbolic batch dimension and takes the weights as arguments (they are not baked in), and is
lowered for CPU and CUDA both, so one artefact serves on either. Loading uses only `jax.export.deserialize` and orbax;
no model code is imported.

`ExportedModel.load` also reads the original openpi's exported models (a `graph` file beside an orbax checkpoint, the
README's `s3://openpi-assets/exported/<name>/model`; see `exported_original`), told apart by their files.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
import hashlib
import importlib.metadata
import json
import logging
import os
import pathlib
import shutil
from typing import Any, ClassVar

import flax.nnx as nnx
import jax
from jax import export as jax_export
import jax.numpy as jnp
import orbax.checkpoint as ocp

from openpi import transforms as _transforms
from openpi.models import fast_tokenizer as _fast_tokenizer
from openpi.models import model as _model
from openpi.models import tokenizer as _tokenizer
from openpi.shared import download
from openpi.shared import fileio as _fileio
from openpi.shared import normalize as _normalize

logger = logging.getLogger(__name__)

FORMAT_NAME = "openpi-exported-model"
# Version 2 added pi0.5 and pi0-FAST; version 1 directories (pi0 only) still load. A reader of version 1 must refuse
# the new model types rather than serve them with pi0's transforms, hence the bump.
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
DEFAULT_PLATFORMS = ("cpu", "cuda")

METADATA_FILE = "metadata.json"
SAMPLER_FILE = "sample_actions.jax_export"
PARAMS_DIR = "params"
PROCESSORS_DIR = "processors"
TOKENIZER_FILE = "tokenizer.model"
FAST_TOKENIZER_DIR = "fast_tokenizer"


class ExportedModelError(ValueError):
    """An exported model directory is incomplete, corrupt, of another format version, or used wrongly."""


def export_model(
    config: _model.BaseModelConfig,
    params: _model.at.Params,
    out_dir: str | os.PathLike,
    *,
    processors: Mapping[str, Mapping[str, _normalize.NormStats]],
    num_steps: int = 10,
    max_decoding_steps: int = 256,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    tokenizer_model: bytes | None = None,
    fast_action_tokenizer: _fast_tokenizer.FASTActionTokenizer | None = None,
    use_quantile_norm: bool | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Writes the exported model of `config` with `params` (as `restore_params` returns) to `out_dir`.

    `processors` maps each processor name (a relative path such as `trossen` or `lerobot/aloha_sim`) to its norm
    stats. `tokenizer_model` is the serialized sentencepiece model of the prompt tokenizer; pi0 and pi0.5 may leave it
    out to use PaliGemma's. pi0-FAST needs it and its `fast_action_tokenizer`, which are shipped so that the served
    model reads actions from its tokens offline. `num_steps` (flow steps, pi0 / pi0.5) and `max_decoding_steps`
    (pi0-FAST) are fixed in the computation. `use_quantile_norm` says how the processors' stats normalize (default: as
    the train configs do, z-score for pi0 and quantiles for pi0.5 / pi0-FAST). The directory is assembled under a
    temporary name and renamed into place, so a crash never leaves a partial artefact at `out_dir`.
    """
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"out_dir: {out_dir} already exists (pass overwrite=True to replace it)")
    model_type = config.model_type
    if use_quantile_norm is None:
        use_quantile_norm = model_type != _model.ModelType.PI0
    if model_type == _model.ModelType.PI0_FAST:
        if max_decoding_steps < 1:
            raise ValueError(f"max_decoding_steps: expected >= 1, got {max_decoding_steps}")
        if tokenizer_model is None or fast_action_tokenizer is None:
            raise ValueError(
                "tokenizer_model, fast_action_tokenizer: both required for a pi0-FAST model (its actions are read "
                "from tokens with them)"
            )
    else:
        if num_steps < 1:
            raise ValueError(f"num_steps: expected >= 1, got {num_steps}")
        if fast_action_tokenizer is not None:
            raise ValueError(f"fast_action_tokenizer: only pi0-FAST models use one, got a {model_type.value} model")
    for name in processors:
        parts = name.split("/")
        if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"processors: expected relative names like 'trossen' or 'org/dataset', got {name!r}")

    params = nnx.to_pure_dict(nnx.state(config.load(params)))
    if model_type == _model.ModelType.PI0_FAST:
        exported = _export_fast_sampler(config, params, max_decoding_steps=max_decoding_steps, platforms=platforms)
        sampling = {"max_decoding_steps": max_decoding_steps}
    else:
        exported = _export_flow_sampler(config, params, num_steps=num_steps, platforms=platforms)
        sampling = {
            "num_steps": num_steps,
            "discrete_state_input": bool(getattr(config, "discrete_state_input", False)),
        }
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
        if fast_action_tokenizer is not None:
            fast_action_tokenizer.save(staging / FAST_TOKENIZER_DIR)
        metadata = {
            **_metadata(config, exported, sampler_sha256=hashlib.sha256(serialized)),
            "use_quantile_norm": use_quantile_norm,
            **sampling,
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Exported %s model to %s (processors: %s)", metadata["model_type"], out_dir, sorted(processors))
    return out_dir


def _batch_polymorphic_inputs(config: _model.BaseModelConfig, params: _model.at.Params) -> tuple[Any, dict, Any]:
    """Specs of the weights, of the sampler's observation and of the action chunk, batch axes symbolic."""
    (batch,) = jax_export.symbolic_shape("batch")
    observation_spec, actions_spec = config.inputs_spec()

    def batch_polymorphic(spec: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((batch, *spec.shape[1:]), spec.dtype)

    observation_spec = jax.tree.map(batch_polymorphic, _sampler_inputs(observation_spec, config.model_type))
    params_spec = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), params)
    return params_spec, observation_spec, batch_polymorphic(actions_spec)


def _export_flow_sampler(
    config: _model.BaseModelConfig, params: _model.at.Params, *, num_steps: int, platforms: Sequence[str]
) -> jax_export.Exported:
    def sample(params: _model.at.Params, observation: dict, noise: jax.Array) -> jax.Array:
        live = config.load(params, remove_extra_params=False)
        return live.sample_actions(None, _model.Observation.from_dict(observation), num_steps=num_steps, noise=noise)

    params_spec, observation_spec, actions_spec = _batch_polymorphic_inputs(config, params)
    return jax_export.export(jax.jit(sample), platforms=tuple(platforms))(params_spec, observation_spec, actions_spec)


def _export_fast_sampler(
    config: _model.BaseModelConfig, params: _model.at.Params, *, max_decoding_steps: int, platforms: Sequence[str]
) -> jax_export.Exported:
    def sample(params: _model.at.Params, observation: dict, key_data: jax.Array, temperature: jax.Array) -> jax.Array:
        live = config.load(params, remove_extra_params=False)
        # pi0-FAST reads the state only as prompt text; the observation still needs one for its batch size.
        batch_size = observation["tokenized_prompt"].shape[0]
        observation = {**observation, "state": jnp.zeros((batch_size, config.action_dim), jnp.float32)}
        return live.sample_actions(
            jax.random.wrap_key_data(key_data),
            _model.Observation.from_dict(observation),
            max_decoding_steps=max_decoding_steps,
            temperature=temperature,
        )

    params_spec, observation_spec, _ = _batch_polymorphic_inputs(config, params)
    key_data = jax.random.key_data(jax.random.key(0))
    return jax_export.export(jax.jit(sample), platforms=tuple(platforms))(
        params_spec,
        observation_spec,
        jax.ShapeDtypeStruct(key_data.shape, key_data.dtype),
        jax.ShapeDtypeStruct((), jnp.float32),
    )


def _sampler_inputs(observation: _model.Observation, model_type: _model.ModelType) -> dict:
    """The observation as the exported computation takes it: model-resolution images, the prompt tokens, and the
    state (pi0, pi0.5) or the tokens' attention blocks (pi0-FAST)."""
    if observation.tokenized_prompt is None or observation.tokenized_prompt_mask is None:
        raise ExportedModelError("observation: the exported model needs tokenized_prompt and tokenized_prompt_mask")
    inputs = {
        "image": dict(observation.images),
        "image_mask": dict(observation.image_masks),
        "tokenized_prompt": observation.tokenized_prompt,
        "tokenized_prompt_mask": observation.tokenized_prompt_mask,
    }
    if model_type != _model.ModelType.PI0_FAST:
        return {**inputs, "state": observation.state}
    if observation.token_ar_mask is None:
        raise ExportedModelError("observation: a pi0-FAST model needs token_ar_mask (see TokenizeFASTInputs)")
    return {**inputs, "token_ar_mask": observation.token_ar_mask}


def _metadata(config: _model.BaseModelConfig, exported: jax_export.Exported, *, sampler_sha256: Any) -> dict[str, Any]:
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
    `ExportedModel.load(directory)`, which returns the subclass of the model type: `ExportedFlowModel` (pi0, pi0.5)
    or `ExportedFASTModel` (pi0-FAST).
    """

    # Fields of metadata.json (beyond the common ones) and their types, per subclass.
    sampling_fields: ClassVar[dict[str, type]] = {}

    def __init__(
        self,
        exported: jax_export.Exported,
        params: _model.at.Params,
        metadata: dict[str, Any],
        norm_stats: dict[str, dict[str, _normalize.NormStats]],
        source: str,
        directory: pathlib.Path | None = None,
    ) -> None:
        super().__init__(metadata["action_dim"], metadata["action_horizon"], metadata["max_token_len"])
        self.exported = exported
        self.params = nnx.Param(params)
        self.metadata = nnx.static(metadata)
        self._norm_stats = nnx.static(norm_stats)
        self._source = source
        self._directory = directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ExportedModel:
        """Loads an exported model from a local, s3:// or gs:// directory, checking its format and integrity."""
        source = str(directory)
        local = download.maybe_download(source)
        # Imported here: the original's layout is served by subclasses of this one.
        from openpi.policies import exported_original

        if not (local / METADATA_FILE).is_file() and exported_original.looks_original(local):
            return exported_original.load(local, source)
        metadata = _read_metadata(local, source)
        model_class = (
            ExportedFASTModel if metadata["model_type"] == _model.ModelType.PI0_FAST.value else ExportedFlowModel
        )
        _check_fields(metadata, model_class.sampling_fields, source)
        model_class.check_files(local, source)
        exported = _read_sampler(local, metadata, source)
        params = _read_params(local, input_avals(exported)[0], source)
        norm_stats = _read_processors(local, source)
        logger.info("Loaded exported %s model from %s", metadata["model_type"], source)
        return model_class(exported, params, metadata, norm_stats, source, local)

    @classmethod
    def check_files(cls, local: pathlib.Path, source: str) -> None:
        """Raises `ExportedModelError` when a file the model type needs is missing."""

    @property
    def model_type(self) -> _model.ModelType:
        return _model.ModelType(self.metadata["model_type"])

    @property
    def use_quantile_norm(self) -> bool:
        """Whether the processors' stats normalize by quantiles (else z-score; format version 1: always z-score)."""
        return bool(self.metadata.get("use_quantile_norm", False))

    @property
    def source(self) -> str:
        """Where the model was loaded from, as given."""
        return self._source

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

    @abc.abstractmethod
    def model_transforms(self) -> _transforms.Group:
        """The model's transforms: inputs resize images and tokenize the prompt; outputs (pi0-FAST) read actions."""

    def _tokenizer_path(self) -> pathlib.Path | None:
        path = None if self._directory is None else self._directory / TOKENIZER_FILE
        return path if path is not None and path.is_file() else None

    def _prepared_inputs(self, observation: _model.Observation) -> dict:
        """The observation resized to the model's cameras and resolution, as the computation takes it."""
        observation = _model.preprocess_observation(
            None,
            observation,
            image_keys=self.metadata["image_keys"],
            image_resolution=tuple(self.metadata["image_resolution"]),
        )
        return conform(_sampler_inputs(observation, self.model_type), input_avals(self.exported)[1], "observation")

    def compute_loss(self, rng, observation, actions, *, train=False):
        raise NotImplementedError("an exported model only samples actions; train from the original checkpoint")


class ExportedFlowModel(ExportedModel):
    """An exported pi0 or pi0.5: samples action chunks `[b, horizon, dim]` with the exported number of flow steps."""

    sampling_fields: ClassVar[dict[str, type]] = {"num_steps": int}

    def model_transforms(self) -> _transforms.Group:
        """Resize images to the model's resolution, tokenize the prompt (pi0.5: with the state), pad the state."""
        return flow_model_transforms(
            self.metadata["image_resolution"],
            _tokenizer.PaligemmaTokenizer(self.max_token_len, path=self._tokenizer_path()),
            state_dim=self.action_dim,
            discrete_state_input=self.metadata.get("discrete_state_input", False),
        )

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
        inputs = self._prepared_inputs(observation)
        if noise is None:
            batch_size = observation.state.shape[0]
            noise = jax.random.normal(rng, (batch_size, self.action_horizon, self.action_dim))
        noise = conform(noise, input_avals(self.exported)[2], "noise")
        return self.exported.call(self.params.get_value(), inputs, noise)


class ExportedFASTModel(ExportedModel):
    """An exported pi0-FAST: decodes token ids `[b, max_decoding_steps]` (as floats); the output transforms of
    `model_transforms` turn them into action chunks with the shipped tokenizers."""

    sampling_fields: ClassVar[dict[str, type]] = {"max_decoding_steps": int}

    @classmethod
    def check_files(cls, local: pathlib.Path, source: str) -> None:
        for name, exists in (
            (TOKENIZER_FILE, (local / TOKENIZER_FILE).is_file()),
            (f"{FAST_TOKENIZER_DIR}/", (local / FAST_TOKENIZER_DIR).is_dir()),
        ):
            if not exists:
                raise ExportedModelError(
                    f"{source}: {name} is missing; a pi0-FAST model ships its tokenizers to read actions from tokens"
                )

    def fast_tokenizer(self) -> _tokenizer.FASTTokenizer:
        """The tokenizer of prompts and generated actions, read from the exported directory (no download)."""
        if self._directory is None:
            raise ExportedModelError(f"{self._source}: an in-memory model has no tokenizers")
        return _tokenizer.FASTTokenizer(
            self.max_token_len, self._directory / FAST_TOKENIZER_DIR, path=self._directory / TOKENIZER_FILE
        )

    def model_transforms(self) -> _transforms.Group:
        """Resize images to the model's resolution and tokenize prompt and state; read actions from the output tokens
        (an undecodable sequence gives zero actions and a logged warning)."""
        height, width = self.metadata["image_resolution"]
        tokenizer = self.fast_tokenizer()
        return _transforms.Group(
            inputs=[_transforms.ResizeImages(height, width), _transforms.TokenizeFASTInputs(tokenizer)],
            outputs=[_transforms.ExtractFASTActions(tokenizer, self.action_horizon, self.action_dim)],
        )

    def sample_actions(
        self,
        rng: _model.at.KeyArrayLike,
        observation: _model.Observation,
        *,
        max_decoding_steps: int | None = None,
        temperature: float = 0.0,
    ) -> _model.at.Float[_model.at.Array, "b s"]:
        """Like `Pi0FAST.sample_actions`; `max_decoding_steps` was fixed at export time and may only repeat that
        value, `temperature` is free (0: greedy)."""
        if max_decoding_steps is not None and max_decoding_steps != self.metadata["max_decoding_steps"]:
            raise ExportedModelError(
                f"max_decoding_steps: this model was exported with {self.metadata['max_decoding_steps']} steps, "
                f"got {max_decoding_steps}"
            )
        inputs = self._prepared_inputs(observation)
        _, _, key_aval, temperature_aval = input_avals(self.exported)
        key_data = jax.random.key_data(jax.random.key(0) if rng is None else rng)
        if key_data.shape != key_aval.shape:
            raise ExportedModelError(
                f"rng: expected a key of the exported implementation (key data {key_aval.shape}), got {key_data.shape}"
            )
        return self.exported.call(
            self.params.get_value(),
            inputs,
            key_data.astype(key_aval.dtype),
            jnp.asarray(temperature, temperature_aval.dtype),
        )


def flow_model_transforms(
    image_resolution: Sequence[int],
    tokenizer: _tokenizer.PaligemmaTokenizer,
    *,
    state_dim: int,
    discrete_state_input: bool = False,
) -> _transforms.Group:
    """The input transforms of an exported pi0 / pi0.5: resize images to `image_resolution` (height, width),
    tokenize the prompt (pi0.5: with the state), zero-pad the state to `state_dim`."""
    height, width = image_resolution
    return _transforms.Group(
        inputs=[
            _transforms.ResizeImages(height, width),
            _transforms.TokenizePrompt(tokenizer, discrete_state_input=discrete_state_input),
            _transforms.PadStatesAndActions(state_dim),
        ]
    )


def input_avals(exported: jax_export.Exported) -> tuple[Any, ...]:
    """Shapes and dtypes the computation takes: `(params, observation, noise)` for pi0 / pi0.5,
    `(params, observation, rng_key_data, temperature)` for pi0-FAST; batch axes symbolic."""
    args, _ = jax.tree.unflatten(exported.in_tree, exported.in_avals)
    return args


def conform(tree: Any, avals: Any, name: str) -> Any:
    """Casts `tree`'s leaves to the dtypes of `avals` after checking their entries and shapes (all but the batch
    axis, the first of both); errors name the entry as `<name>[key]...`."""
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


_COMMON_FIELDS: dict[str, type] = {
    "model_type": str,
    "action_horizon": int,
    "action_dim": int,
    "max_token_len": int,
    "image_keys": list,
    "image_resolution": list,
    "platforms": list,
    "sampler_sha256": str,
}


def _check_fields(metadata: dict[str, Any], fields: Mapping[str, type], source: str) -> None:
    for field, kind in fields.items():
        if not isinstance(metadata.get(field), kind):
            raise ExportedModelError(
                f"{source}/{METADATA_FILE}: field {field!r} expected a {kind.__name__}, got {metadata.get(field)!r}"
            )


def _read_metadata(local: pathlib.Path, source: str) -> dict[str, Any]:
    path = local / METADATA_FILE
    if not path.is_file():
        raise ExportedModelError(
            f"{source}: not an exported openpi model ({METADATA_FILE} of openpi's format, or graph of the "
            "original's, is missing)"
        )
    try:
        metadata = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportedModelError(f"{source}/{METADATA_FILE}: not valid JSON ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ExportedModelError(f"{source}/{METADATA_FILE}: expected 'format': {FORMAT_NAME!r}")
    version = metadata.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        hint = "; upgrade openpi to read it" if newer else ""
        raise ExportedModelError(
            f"{source}: exported model format version {version!r}, but this openpi reads versions "
            f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))}{hint}"
        )
    _check_fields(metadata, _COMMON_FIELDS, source)
    for field in ("use_quantile_norm", "discrete_state_input"):
        if not isinstance(metadata.get(field, False), bool):
            raise ExportedModelError(
                f"{source}/{METADATA_FILE}: field {field!r} expected a bool, got {metadata[field]!r}"
            )
    known_types = [_model.ModelType.PI0.value] if version == 1 else [t.value for t in _model.ModelType]
    if metadata["model_type"] not in known_types:
        raise ExportedModelError(
            f"{source}/{METADATA_FILE}: field 'model_type' expected one of {known_types} (format version {version}), "
            f"got {metadata['model_type']!r}"
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
    check_platform(exported, source)
    return exported


def check_platform(exported: jax_export.Exported, source: str) -> None:
    """Raises `ExportedModelError` when the computation was not lowered for the platform JAX runs on."""
    platform = "cuda" if jax.default_backend() == "gpu" else jax.default_backend()
    if platform not in exported.platforms:
        raise ExportedModelError(
            f"{source}: exported for platforms {list(exported.platforms)}, which do not include {platform!r}"
        )


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
