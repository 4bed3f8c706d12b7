"""Training checkpoints: `<checkpoint_dir>/<step>/{params, train_state, assets/<asset_id>/norm_stats.json}`.

An orbax `CheckpointManager` writes each step into a temporary directory and renames it into place only when
every item (params, train state, assets) is complete, so a crash never leaves a step that resume could pick
up half-written; unfinished temporary directories are ignored and cleaned up.

`params` holds `{"params": <param tree>}` with a trailing `"value"` on every leaf, like checkpoints the original
openpi training wrote from an `nnx.State`; `openpi.models.model.restore_params` reads it (EMA params when EMA
is on). `train_state` holds the step, the optimizer state (its leaves, flattened in tree order) and, with EMA,
the raw params.
"""

from collections.abc import Mapping
import dataclasses
import logging
import os
import pathlib
import shutil
from typing import Any
import uuid

from etils import epath
import flax.nnx as nnx
import jax
import orbax.checkpoint as ocp

from openpi.shared import download as _download
from openpi.shared import normalize as _normalize
from openpi.training import sharding as _sharding
from openpi.training import utils as _utils

logger = logging.getLogger(__name__)

PARAMS_ITEM, TRAIN_STATE_ITEM, ASSETS_ITEM = "params", "train_state", "assets"


class _AssetsHandler(ocp.CheckpointHandler):
    """Writes `<item dir>/<asset_id>/norm_stats.json` (process 0 only); nothing to restore."""

    def save(self, directory: epath.Path, args: "AssetsSave") -> None:
        if jax.process_index() != 0:
            return
        for asset_id, norm_stats in args.norm_stats.items():
            _normalize.save(pathlib.Path(directory) / asset_id, norm_stats)

    def restore(self, directory: epath.Path, args: "AssetsSave | None" = None) -> None:
        return None


@ocp.args.register_with_handler(_AssetsHandler, for_save=True, for_restore=True)
@dataclasses.dataclass
class AssetsSave(ocp.args.CheckpointArgs):
    """Norm stats per asset id."""

    norm_stats: Mapping[str, Mapping[str, _normalize.NormStats]]


def check_checkpoint_dir(checkpoint_dir: str | pathlib.Path, *, overwrite: bool, resume: bool) -> bool:
    """Whether the run continues from the last complete checkpoint in its directory; reads, never writes.

    An existing directory is to be replaced with `overwrite` (by `initialize_checkpoint_dir`, once the new run can
    start), continued with `resume` (if it holds a complete step), and otherwise refused.
    """
    checkpoint_dir = pathlib.Path(checkpoint_dir).resolve()
    if not checkpoint_dir.exists():
        if resume:
            logger.warning("--resume: %s does not exist yet; starting a new run", checkpoint_dir)
        return False
    if overwrite:
        return False
    if not resume:
        raise FileExistsError(
            f"checkpoint directory {checkpoint_dir} already exists: pass --overwrite to delete it and start "
            "afresh, or --resume to continue the run"
        )
    if not all_steps(checkpoint_dir):
        logger.warning("--resume: %s holds no complete checkpoint; starting a new run", checkpoint_dir)
        return False
    return True


def initialize_checkpoint_dir(
    checkpoint_dir: str | pathlib.Path, *, keep_period: int | None, overwrite: bool = False, resume: bool | None = None
) -> ocp.CheckpointManager | tuple[ocp.CheckpointManager, bool]:
    """The checkpoint manager of the run's directory, which is created if missing.

    With `overwrite` an existing directory is replaced by an empty one: the old run is moved aside in one rename
    (to `.<name>.overwritten-<id>` beside it) and deleted once the new directory is in place, so a crash never leaves
    it half-deleted under its own name. Call this once every input of the new run (weights, data, tokenizer) has been
    resolved.

    Given `resume` (the original's call shape), it first decides as `check_checkpoint_dir` does whether the run
    continues, never overwriting a run it continues, and returns `(manager, resuming)`.
    """
    if resume is not None:
        resuming = check_checkpoint_dir(checkpoint_dir, overwrite=overwrite, resume=resume)
        manager = initialize_checkpoint_dir(
            checkpoint_dir, keep_period=keep_period, overwrite=overwrite and not resuming
        )
        return manager, resuming
    checkpoint_dir = pathlib.Path(checkpoint_dir).resolve()
    _sharding.sync_processes("checkpoint-dir")
    if jax.process_index() == 0:
        if overwrite and checkpoint_dir.exists():
            replaced = checkpoint_dir.with_name(f".{checkpoint_dir.name}.overwritten-{uuid.uuid4().hex[:8]}")
            os.replace(checkpoint_dir, replaced)
            checkpoint_dir.mkdir()
            shutil.rmtree(replaced)
            logger.info("Deleted the previous run in %s (--overwrite)", checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    _sharding.sync_processes("checkpoint-dir-created")

    return ocp.CheckpointManager(
        epath.Path(checkpoint_dir),
        item_handlers={
            PARAMS_ITEM: ocp.PyTreeCheckpointHandler(),
            TRAIN_STATE_ITEM: ocp.PyTreeCheckpointHandler(),
            ASSETS_ITEM: _AssetsHandler(),
        },
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1,
            keep_period=keep_period,
            create=False,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=False,
        ),
    )


def _params_item(params: nnx.State) -> dict:
    """`{"params": pure dict}` with a trailing "value" on every leaf (the original training layout)."""
    return {"params": jax.tree.map(lambda leaf: {"value": leaf}, nnx.to_pure_dict(params))}


def _opt_state_item(opt_state) -> dict[str, jax.Array]:
    return {str(index): leaf for index, leaf in enumerate(jax.tree.leaves(opt_state))}


def _train_state_item(state: _utils.TrainState) -> dict:
    item = {"step": state.step, "opt_state": _opt_state_item(state.opt_state)}
    if state.ema_params is not None:
        item["params"] = nnx.to_pure_dict(state.params)
    return item


def save_state(
    manager: ocp.CheckpointManager,
    state: _utils.TrainState,
    norm_stats: Mapping[str, Mapping[str, _normalize.NormStats]] | Any,
    step: int,
) -> None:
    """Saves `state` as checkpoint `step` (EMA params, if any, as `params`) with `norm_stats` (per asset id) as
    assets. In place of `norm_stats`, a data loader with a `data_config()` (the original's call shape) gives its
    data config's norm stats under its asset id."""
    if callable(getattr(norm_stats, "data_config", None)):
        data_config = norm_stats.data_config()
        has_stats = data_config is not None and data_config.norm_stats is not None and data_config.asset_id
        norm_stats = {data_config.asset_id: data_config.norm_stats} if has_stats else {}
    saved_params = state.ema_params if state.ema_params is not None else state.params
    manager.save(
        step,
        args=ocp.args.Composite(
            **{
                PARAMS_ITEM: ocp.args.PyTreeSave(_params_item(saved_params)),
                TRAIN_STATE_ITEM: ocp.args.PyTreeSave(_train_state_item(state)),
                ASSETS_ITEM: AssetsSave(norm_stats),
            }
        ),
    )
    manager.wait_until_finished()


def restore_state(
    manager: ocp.CheckpointManager,
    abstract_state: _utils.TrainState,
    data_loader: Any = None,
    step: int | None = None,
) -> _utils.TrainState:
    """Restores checkpoint `step` (default: the latest complete one) into the structure and shardings of
    `abstract_state` (a TrainState of `jax.ShapeDtypeStruct`s with shardings).

    `data_loader` is accepted for the original's call shape and not used; an int in its place is the step.
    """
    if isinstance(data_loader, int):
        step = data_loader
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{manager.directory}: no complete checkpoint to restore")
    saved_params = abstract_state.ema_params if abstract_state.ema_params is not None else abstract_state.params
    targets = {
        PARAMS_ITEM: _params_item(saved_params),
        TRAIN_STATE_ITEM: _train_state_item(abstract_state),
    }
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            **{
                name: ocp.args.PyTreeRestore(
                    item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)
                )
                for name, target in targets.items()
            }
        ),
    )
    is_value_node = lambda node: isinstance(node, dict) and set(node) == {"value"}  # noqa: E731
    saved = jax.tree.map(lambda node: node["value"], restored[PARAMS_ITEM]["params"], is_leaf=is_value_node)
    train_state = restored[TRAIN_STATE_ITEM]
    opt_leaves = [train_state["opt_state"][str(i)] for i in range(len(train_state["opt_state"]))]
    opt_state = jax.tree.unflatten(jax.tree.structure(abstract_state.opt_state), opt_leaves)

    def to_state(template: nnx.State, pure: dict) -> nnx.State:
        state = jax.tree.map(lambda x: x, template)
        nnx.replace_by_pure_dict(state, pure)
        return state

    if abstract_state.ema_params is not None:
        params = to_state(abstract_state.params, train_state["params"])
        ema_params = to_state(abstract_state.ema_params, saved)
    else:
        params, ema_params = to_state(abstract_state.params, saved), None
    return dataclasses.replace(
        abstract_state, step=train_state["step"], params=params, opt_state=opt_state, ema_params=ema_params
    )


def load_norm_stats(assets_dir: str | pathlib.Path, asset_id: str) -> dict[str, _normalize.NormStats]:
    """The norm stats in `<assets_dir>/<asset_id>/norm_stats.json`: a checkpoint's `assets/` or a config's assets dir,
    local, s3:// or gs://. Raises FileNotFoundError when there are none (a data config treats that as no stats)."""
    location = f"{str(assets_dir).rstrip('/')}/{asset_id}"
    norm_stats = _normalize.load(_download.maybe_download(location))
    logger.info("Loaded norm stats from %s", location)
    return norm_stats


def all_steps(checkpoint_dir: str | pathlib.Path) -> list[int]:
    """The complete checkpoint steps in a run directory, ascending."""
    directory = pathlib.Path(checkpoint_dir)
    if not directory.is_dir():
        return []
    with ocp.CheckpointManager(epath.Path(directory), options=ocp.CheckpointManagerOptions(read_only=True)) as manager:
        return sorted(int(step) for step in manager.all_steps())
