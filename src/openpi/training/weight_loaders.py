"""Weight loaders: fill a freshly initialised model's params from a checkpoint before training starts."""

import dataclasses
import logging
import re
from typing import Protocol, runtime_checkable

import numpy as np

from openpi.models import model as _model
from openpi.shared import array_typing as at
from openpi.shared import download
from openpi.shared import tree as _tree

logger = logging.getLogger(__name__)


@runtime_checkable
class WeightLoader(Protocol):
    def load(self, params: at.Params) -> at.Params:
        """Returns `params` (a nested dict of arrays or shape structs) with some or all leaves replaced."""


@dataclasses.dataclass(frozen=True)
class NoOpWeightLoader(WeightLoader):
    """Keeps the fresh initialisation."""

    def load(self, params: at.Params) -> at.Params:
        return params


@dataclasses.dataclass(frozen=True)
class CheckpointWeightLoader(WeightLoader):
    """Loads every param from an original-layout `params/` checkpoint (local path, s3://, gs://, https://).

    Params that the checkpoint lacks are an error, except those whose path matches `missing_regex` (by default
    the LoRA adapters, which keep their fresh initialisation). Checkpoint params the model lacks are ignored.
    Loaded values take the dtype of the model's params.
    """

    params_path: str
    missing_regex: str = ".*lora.*"

    def load(self, params: at.Params) -> at.Params:
        loaded = _model.restore_params(self.params_path, restore_type=np.ndarray)
        return merge_params(loaded, params, missing_regex=self.missing_regex, source=self.params_path)


@dataclasses.dataclass(frozen=True)
class PaliGemmaWeightLoader(WeightLoader):
    """Loads the released PaliGemma 3B weights (`pt_224`, big_vision layout) into the model's `PaliGemma` params;
    every param PaliGemma lacks (the action expert, the action and time projections) keeps its initialisation."""

    params_url: str = "gs://vertex-model-garden-paligemma-us/paligemma/pt_224.npz"

    def load(self, params: at.Params) -> at.Params:
        path = download.maybe_download(self.params_url, gs={"token": "anon"})
        with path.open("rb") as f:
            flat = dict(np.load(f, allow_pickle=False))
        loaded = {"PaliGemma": _tree.unflatten(flat, sep="/")["params"]}
        return merge_params(loaded, params, missing_regex=".*", source=self.params_url)


def merge_params(loaded: at.Params, params: at.Params, *, missing_regex: str, source: str = "checkpoint") -> at.Params:
    """`params` with each leaf replaced by the same path of `loaded`, cast to the leaf's dtype.

    Raises a ValueError listing shape mismatches and params missing from `loaded` (unless matched by
    `missing_regex`).
    """
    flat_params = _tree.flatten(params, sep="/")
    flat_loaded = _tree.flatten(loaded, sep="/")
    pattern = re.compile(missing_regex)
    problems = []
    merged = {}
    for path, reference in flat_params.items():
        if path not in flat_loaded:
            if pattern.fullmatch(path):
                merged[path] = reference
                continue
            problems.append(f"missing {path} (model shape {tuple(reference.shape)})")
            continue
        value = flat_loaded[path]
        if tuple(value.shape) != tuple(reference.shape):
            problems.append(f"shape of {path}: model expects {tuple(reference.shape)}, checkpoint has {value.shape}")
            continue
        merged[path] = np.asarray(value).astype(reference.dtype)
    if problems:
        shown = "\n  ".join(sorted(problems)[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"{source}: params do not fit the model config ({len(problems)} problems):\n  {shown}{more}")
    ignored = len(flat_loaded.keys() - flat_params.keys())
    if ignored:
        logger.info("%s: ignored %d params the model does not have", source, ignored)
    return _tree.unflatten(merged, sep="/")
