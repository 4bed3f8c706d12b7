"""Builds policies: a model (from a training checkpoint or an exported model) plus its transforms and norm stats.

Policies sit below training (training's data configs read the robot records of this package), so this module does
not import training: it names what it reads of a train config (`TrainConfigLike`), which
`openpi.training.config.TrainConfig` is.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import logging
import os
import pathlib
from typing import Any, Protocol

from openpi import transforms as _transforms
from openpi.models import model as _model
from openpi.models import tokenizer as _tokenizer
from openpi.policies import exported as _exported
from openpi.policies import policy as _policy
from openpi.shared import download
from openpi.shared import normalize as _normalize

logger = logging.getLogger(__name__)

NormStatsDict = Mapping[str, _normalize.NormStats]


class MissingNormStatsError(FileNotFoundError):
    """A training checkpoint lacks the norm stats its config normalizes with."""


class DataConfigLike(Protocol):
    """What a policy takes of a train config's data config (`openpi.training.config.DataConfig`)."""

    @property
    def asset_id(self) -> str | None: ...
    @property
    def data_transforms(self) -> _transforms.Group: ...
    @property
    def model_transforms(self) -> _transforms.Group: ...
    @property
    def use_quantile_norm(self) -> bool: ...


class DataConfigFactoryLike(Protocol):
    """Builds the data config for a model (`openpi.training.config.DataConfigFactory`)."""

    def create(self, assets_dirs: pathlib.Path, model_config: _model.BaseModelConfig) -> DataConfigLike: ...


class TrainConfigLike(Protocol):
    """What a policy takes of the train config of a checkpoint (`openpi.training.config.TrainConfig`)."""

    @property
    def name(self) -> str: ...
    @property
    def model(self) -> _model.BaseModelConfig: ...
    @property
    def data(self) -> DataConfigFactoryLike: ...
    @property
    def assets_dirs(self) -> pathlib.Path: ...
    @property
    def policy_metadata(self) -> dict[str, Any] | None: ...


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """A model and everything around it that turns robot observations into its inputs and its outputs into actions.

    Inputs run: repack → default prompt → robot (data) transforms → Normalize → model transforms.
    Outputs run in mirror order: model outputs → Unnormalize → robot outputs → repack outputs.
    """

    model: _model.BaseModel
    # Stats for Normalize / Unnormalize; None skips normalization.
    norm_stats: NormStatsDict | None
    data_transforms: _transforms.Group = dataclasses.field(default_factory=_transforms.Group)
    model_transforms: _transforms.Group = dataclasses.field(default_factory=_transforms.Group)
    repack_transforms: _transforms.Group = dataclasses.field(default_factory=_transforms.Group)
    # Prompt used when an observation has none.
    default_prompt: str | None = None
    use_quantile_norm: bool = False
    sample_kwargs: dict[str, Any] | None = None
    # Sent to every client when it connects.
    metadata: dict[str, Any] | None = None


def create_policy(config: PolicyConfig) -> _policy.Policy:
    """The Policy of `config`, with its transforms chained in the order `PolicyConfig` describes."""
    return _policy.Policy(
        config.model,
        transforms=[
            *config.repack_transforms.inputs,
            _transforms.InjectDefaultPrompt(config.default_prompt),
            *config.data_transforms.inputs,
            _transforms.Normalize(config.norm_stats, use_quantiles=config.use_quantile_norm),
            *config.model_transforms.inputs,
        ],
        output_transforms=[
            *config.model_transforms.outputs,
            _transforms.Unnormalize(config.norm_stats, use_quantiles=config.use_quantile_norm),
            *config.data_transforms.outputs,
            *config.repack_transforms.outputs,
        ],
        sample_kwargs=config.sample_kwargs,
        metadata=config.metadata,
    )


def _restore_serving_params(train_config: TrainConfigLike, checkpoint_dir: pathlib.Path) -> dict:
    """A checkpoint's params in the model's compute dtype (bfloat16 for pi0, as the original serves them): half
    the memory of the float32 training weights, and half the bytes each inference reads."""
    return _model.restore_params(checkpoint_dir / "params", dtype=getattr(train_config.model, "dtype", None))


def make_policy_config(
    train_config: TrainConfigLike,
    checkpoint_dir: str | os.PathLike,
    *,
    repack_transforms: _transforms.Group | None = None,
    sample_kwargs: dict[str, Any] | None = None,
    default_prompt: str | None = None,
    norm_stats: NormStatsDict | None = None,
    allow_unnormalized: bool = False,
) -> PolicyConfig:
    """Loads the params of a training checkpoint (local, s3://, gs://) and the train config's transforms.

    Params are cast to the model config's `dtype`. Norm stats come from
    `<checkpoint_dir>/assets/<asset_id>/norm_stats.json` unless given; a checkpoint without that file is refused
    (`MissingNormStatsError`) unless `allow_unnormalized`, which serves it unnormalized with a warning. A data
    config without an asset id (random debug data) has no stats to carry and serves unnormalized.
    """
    source = str(checkpoint_dir)
    checkpoint_dir = download.maybe_download(source)
    logger.info("Loading %s params from %s", train_config.name, checkpoint_dir)
    model = train_config.model.load(_restore_serving_params(train_config, checkpoint_dir))
    data_config = train_config.data.create(train_config.assets_dirs, train_config.model)
    if norm_stats is None and data_config.asset_id is not None:
        norm_stats = _checkpoint_norm_stats(
            train_config.name, source, checkpoint_dir, data_config.asset_id, allow_unnormalized=allow_unnormalized
        )
    return PolicyConfig(
        model=model,
        norm_stats=norm_stats,
        data_transforms=data_config.data_transforms,
        model_transforms=data_config.model_transforms,
        repack_transforms=repack_transforms or _transforms.Group(),
        default_prompt=default_prompt,
        use_quantile_norm=data_config.use_quantile_norm,
        sample_kwargs=sample_kwargs,
        metadata=train_config.policy_metadata,
    )


def _checkpoint_norm_stats(
    config_name: str, source: str, checkpoint_dir: pathlib.Path, asset_id: str, *, allow_unnormalized: bool
) -> NormStatsDict | None:
    """The norm stats a checkpoint carries under `assets/<asset_id>/`; None (with a warning) when it carries none
    and `allow_unnormalized`."""
    path = checkpoint_dir / "assets" / asset_id / _normalize.NORM_STATS_FILENAME
    if path.exists():
        return _normalize.load(path.parent)
    missing = f"{source.rstrip('/')}/assets/{asset_id}/{_normalize.NORM_STATS_FILENAME}"
    if allow_unnormalized:
        logger.warning("%s does not exist: serving config %s UNNORMALIZED, as asked", missing, config_name)
        return None
    raise MissingNormStatsError(
        f"{missing} does not exist: the checkpoint carries no norm stats for asset id {asset_id!r} of config "
        f"{config_name!r}, and its model expects normalized data. Compute them (scripts/compute_norm_stats.py "
        f"--config-name {config_name}) before training, or copy a norm_stats.json there; to serve unnormalized "
        "anyway, pass --allow-unnormalized (allow_unnormalized=True)."
    )


def create_trained_policy(
    train_config: TrainConfigLike,
    checkpoint_dir: str | os.PathLike,
    *,
    repack_transforms: _transforms.Group | None = None,
    sample_kwargs: dict[str, Any] | None = None,
    default_prompt: str | None = None,
    norm_stats: NormStatsDict | None = None,
    allow_unnormalized: bool = False,
) -> _policy.Policy:
    """The policy of a training checkpoint: its params, the train config's transforms and the checkpoint's norm
    stats (see `make_policy_config`)."""
    return create_policy(
        make_policy_config(
            train_config,
            checkpoint_dir,
            repack_transforms=repack_transforms,
            sample_kwargs=sample_kwargs,
            default_prompt=default_prompt,
            norm_stats=norm_stats,
            allow_unnormalized=allow_unnormalized,
        )
    )


def export_trained_policy(
    train_config: TrainConfigLike,
    checkpoint_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    processor: str | None = None,
    num_steps: int = 10,
    max_decoding_steps: int = 256,
    overwrite: bool = False,
) -> pathlib.Path:
    """Exports a training checkpoint (see `exported.export_model`) with its norm stats as processor `processor`
    (default: the data config's asset id) and the tokenizers of the train config's model transforms (pi0-FAST: the
    sentencepiece model and the FAST action vocabulary). `num_steps` applies to pi0 / pi0.5, `max_decoding_steps` to
    pi0-FAST."""
    checkpoint_dir = download.maybe_download(str(checkpoint_dir))
    params = _restore_serving_params(train_config, checkpoint_dir)
    data_config = train_config.data.create(train_config.assets_dirs, train_config.model)
    if data_config.asset_id is None:
        raise ValueError(f"config {train_config.name!r}: names no asset id, so its checkpoints carry no norm stats")
    norm_stats = _normalize.load(checkpoint_dir / "assets" / data_config.asset_id)
    tokenizer = _prompt_tokenizer(data_config.model_transforms)
    return _exported.export_model(
        train_config.model,
        params,
        out_dir,
        processors={processor or data_config.asset_id: norm_stats},
        num_steps=num_steps,
        max_decoding_steps=max_decoding_steps,
        tokenizer_model=None if tokenizer is None else tokenizer.model_proto(),
        fast_action_tokenizer=tokenizer.action_tokenizer if isinstance(tokenizer, _tokenizer.FASTTokenizer) else None,
        use_quantile_norm=data_config.use_quantile_norm,
        overwrite=overwrite,
    )


def _prompt_tokenizer(
    model_transforms: _transforms.Group,
) -> _tokenizer.PaligemmaTokenizer | _tokenizer.FASTTokenizer | None:
    """The tokenizer of the model transforms' tokenizing step (`TokenizePrompt` or `TokenizeFASTInputs`), if any."""
    for transform in model_transforms.inputs:
        if isinstance(transform, _transforms.TokenizePrompt | _transforms.TokenizeFASTInputs):
            return transform.tokenizer
    return None


def make_exported_policy_config(
    exported: str | os.PathLike | _exported.ExportedModel,
    *,
    data_transforms: _transforms.Group,
    processor: str | None = None,
    default_processor: str | None = None,
    repack_transforms: _transforms.Group | None = None,
    default_prompt: str | None = None,
    sample_kwargs: dict[str, Any] | None = None,
) -> PolicyConfig:
    """An exported model (a directory: local, s3://, gs://; or a loaded model) and the transforms around it, for a
    robot whose transforms are `data_transforms` (which must fill the model type's camera slots).

    Norm stats come from the processor chosen by `ExportedModel.select_processor(processor, default_processor)`,
    normalizing as the model was trained (z-score or quantiles); the model transforms (resize, tokenize, pad;
    pi0-FAST: read actions from the tokens) from the model's metadata and shipped tokenizers.
    """
    model = exported if isinstance(exported, _exported.ExportedModel) else _exported.ExportedModel.load(exported)
    chosen = model.select_processor(processor, default_processor)
    logger.info("Using processor %r of %s", chosen, model.source)
    return PolicyConfig(
        model=model,
        norm_stats=model.norm_stats(chosen),
        data_transforms=data_transforms,
        model_transforms=model.model_transforms(),
        repack_transforms=repack_transforms or _transforms.Group(),
        default_prompt=default_prompt,
        use_quantile_norm=model.use_quantile_norm,
        sample_kwargs=sample_kwargs,
        metadata={
            "model_type": model.metadata["model_type"],
            "action_horizon": model.action_horizon,
            "processor": chosen,
        },
    )


def create_exported_policy(
    exported: str | os.PathLike | _exported.ExportedModel,
    *,
    data_transforms: _transforms.Group,
    processor: str | None = None,
    default_processor: str | None = None,
    repack_transforms: _transforms.Group | None = None,
    default_prompt: str | None = None,
    sample_kwargs: dict[str, Any] | None = None,
) -> _policy.Policy:
    """The policy of an exported model (see `make_exported_policy_config`)."""
    return create_policy(
        make_exported_policy_config(
            exported,
            data_transforms=data_transforms,
            processor=processor,
            default_processor=default_processor,
            repack_transforms=repack_transforms,
            default_prompt=default_prompt,
            sample_kwargs=sample_kwargs,
        )
    )
