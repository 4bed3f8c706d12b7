"""The training loop: train state initialisation, the train step, checkpointing and the metrics log.

`train(config)` runs a registered config, data parallel over all devices of all processes with params optionally
sharded (FSDP, `fsdp_devices`); `scripts/train.py` is its command line. A run spanning several processes or nodes is
joined from `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID` or from SLURM; each process loads its own
slice of every batch. Checkpoints, a metrics log (`metrics.jsonl`) and a loss curve (`loss_curve.png`) go to
`<checkpoint_base_dir>/<config>/<exp_name>/`; `overwrite` replaces an earlier run there only once the new run's weights,
tokenizer and first batch are in hand. On a machine with an NVIDIA GPU that JAX cannot use it stops at start unless
`allow_cpu`.
"""

import dataclasses
import itertools
import json
import logging
import netrc
import os
import pathlib
from typing import Any
import urllib.parse
import uuid

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from openpi.models import model as _model
from openpi.shared import accelerator
from openpi.shared import allocator
from openpi.shared import compilation_cache
from openpi.shared import fileio as _fileio
from openpi.shared import tree as _tree
from openpi.training import checkpoints as _checkpoints
from openpi.training import config as _config
from openpi.training import data_loader as _data_loader
from openpi.training import optimizer as _optimizer
from openpi.training import sharding
from openpi.training import utils as _utils

logger = logging.getLogger("openpi.train")

METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"
WANDB_ID_FILE = "wandb_id.txt"


def _split_params(config: _config.TrainConfig, params: nnx.State) -> tuple[nnx.State, nnx.State]:
    """(trainable, frozen) params."""
    return nnx.split_state(params, config.trainable_filter, ...)


def init_train_state(
    config: _config.TrainConfig, rng: jax.Array, mesh: jax.sharding.Mesh, *, resume_from: Any = None
) -> tuple[_utils.TrainState, Any]:
    """The initial train state, sharded over `mesh`, with the weight loader's params; or restored from the
    checkpoint manager `resume_from`. Returns the state and its shardings."""
    tx = _optimizer.create_optimizer(config.optimizer, config.lr_schedule)

    def init(rng: jax.Array, loaded_params: dict | None) -> _utils.TrainState:
        graphdef, params = nnx.split(config.model.create(rng))
        if loaded_params:
            merged = _tree.flatten(nnx.to_pure_dict(params)) | _tree.flatten(loaded_params)
            nnx.replace_by_pure_dict(params, _tree.unflatten(merged))
        trainable, frozen = _split_params(config, params)
        # Frozen params are only read: bfloat16 halves their memory.
        frozen = jax.tree.map(lambda x: x.astype(jnp.bfloat16), frozen)
        params = nnx.merge_state(trainable, frozen)
        return _utils.TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(trainable),
            ema_params=None if config.ema_decay is None else params,
            model_def=graphdef,
            tx=tx,
            ema_decay=config.ema_decay,
        )

    abstract = jax.eval_shape(init, rng, None)
    state_sharding = sharding.fsdp_sharding(abstract, mesh, min_size_bytes=config.fsdp_min_param_bytes)
    if resume_from is not None:
        with_sharding = jax.tree.map(
            lambda leaf, where: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=where), abstract, state_sharding
        )
        return _checkpoints.restore_state(resume_from, with_sharding), state_sharding
    loaded = config.weight_loader.load(nnx.to_pure_dict(abstract.params))
    _model.check_param_tree(nnx.to_pure_dict(abstract.params), loaded)
    # Leaves the loader left abstract keep their fresh initialisation.
    loaded = _tree.unflatten(
        {k: v for k, v in _tree.flatten(loaded).items() if not isinstance(v, jax.ShapeDtypeStruct)}
    )
    state = jax.jit(init, in_shardings=(sharding.replicated(mesh), None), out_shardings=state_sharding)(rng, loaded)
    logger.info("Initialised train state: %s", _utils.array_tree_summary(state.params))
    return state, state_sharding


def train_step(
    config: _config.TrainConfig, rng: jax.Array, state: _utils.TrainState, batch: tuple[_model.Observation, jax.Array]
) -> tuple[_utils.TrainState, dict[str, jax.Array]]:
    """One optimizer step on `batch`; a pure function of its inputs (the noise comes from `rng` and the step)."""
    trainable, frozen = _split_params(config, state.params)
    observation, actions = batch

    def loss_fn(trainable: nnx.State) -> jax.Array:
        model = nnx.merge(state.model_def, nnx.merge_state(trainable, frozen))
        step_rng = jax.random.fold_in(rng, state.step)
        return jnp.mean(model.compute_loss(step_rng, observation, actions, train=True))

    loss, grads = jax.value_and_grad(loss_fn)(trainable)
    updates, opt_state = state.tx.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    params = nnx.merge_state(trainable, frozen)
    ema_params = state.ema_params
    if state.ema_decay is not None:
        ema_params = jax.tree.map(
            lambda old, new: state.ema_decay * old + (1 - state.ema_decay) * new, ema_params, params
        )
    new_state = dataclasses.replace(
        state, step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params
    )
    info = {"loss": loss, "grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(trainable)}
    return new_state, info


def _resolve_norm_stats(config: _config.TrainConfig) -> _config.DataConfig:
    """The data config; generated datasets get their norm stats computed on first use."""
    data_config = config.data.create(config.assets_dirs, config.model)
    if data_config.norm_stats is None and data_config.generate_dataset is not None:
        if jax.process_index() == 0:
            path = _data_loader.compute_norm_stats(config, progress=False)
            logger.info("Computed norm stats of the generated dataset into %s", path)
        sharding.sync_processes("norm-stats")
        data_config = config.data.create(config.assets_dirs, config.model)
    return data_config


class MetricsLog:
    """Appends metrics to `metrics.jsonl` (process 0) and redraws the loss curve PNG from it."""

    def __init__(self, checkpoint_dir: pathlib.Path, *, resumed_step: int | None):
        self._path = checkpoint_dir / METRICS_FILE
        self._curve = checkpoint_dir / LOSS_CURVE_FILE
        self._enabled = jax.process_index() == 0
        self._records: list[dict] = []
        if self._enabled:
            # A run killed while writing either file leaves a temp file beside it; this run writes them again.
            for path in (self._path, self._curve):
                _fileio.remove_stale_temps(path)
        if self._enabled and resumed_step is not None and self._path.exists():
            lines = self._path.read_text().splitlines()
            self._records = [r for r in map(json.loads, filter(None, lines)) if r["step"] < resumed_step]
            self._rewrite()

    def _rewrite(self) -> None:
        _fileio.atomic_write_bytes(self._path, "".join(json.dumps(r) + "\n" for r in self._records).encode())

    def append(self, record: dict) -> None:
        if not self._enabled:
            return
        self._records.append(record)
        with self._path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def draw_loss_curve(self) -> None:
        """Training loss (log scale) and learning rate against the step, as a PNG next to the metrics log."""
        if not self._enabled or len(self._records) < 2:
            return
        from matplotlib.figure import Figure  # imported here: only the curve needs it

        steps = [r["step"] for r in self._records]
        figure = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
        loss_axes = figure.subplots()
        loss_axes.plot(steps, [r["loss"] for r in self._records], color="tab:blue", label="training loss")
        loss_axes.set_yscale("log")
        loss_axes.set_xlabel("step")
        loss_axes.set_ylabel("loss (log scale)", color="tab:blue")
        loss_axes.grid(True, which="both", alpha=0.3)
        if all("learning_rate" in r for r in self._records):
            lr_axes = loss_axes.twinx()
            lr_axes.plot(steps, [r["learning_rate"] for r in self._records], color="tab:orange", alpha=0.7)
            lr_axes.set_ylabel("learning rate", color="tab:orange")
        loss_axes.set_title(f"{self._path.parent.parent.name} / {self._path.parent.name}")
        with _fileio.atomic_write(self._curve) as f:
            figure.savefig(f, format="png")


def wandb_has_credentials() -> bool:
    """Whether wandb could log in without asking: `WANDB_API_KEY`, or a netrc entry for the wandb host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urllib.parse.urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = pathlib.Path(os.environ.get("NETRC", pathlib.Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _init_wandb(config: _config.TrainConfig, checkpoint_dir: pathlib.Path, *, resuming: bool):
    """A wandb run in `<checkpoint_dir>/wandb`, resumed under the id stored in `wandb_id.txt`. Without
    credentials it runs offline (sync later with `wandb sync`), so it never prompts; `WANDB_MODE` overrides.
    None when disabled or not process 0."""
    if not config.wandb_enabled or jax.process_index() != 0:
        return None
    import wandb

    id_file = checkpoint_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if resuming and id_file.exists() else uuid.uuid4().hex[:8]
    _fileio.atomic_write_bytes(id_file, run_id.encode())
    mode = os.environ.get("WANDB_MODE") or ("online" if wandb_has_credentials() else "offline")
    if mode == "offline":
        logger.info("wandb: no credentials, logging offline to %s (upload with `wandb sync`)", checkpoint_dir)
    return wandb.init(
        id=run_id,
        resume="allow",
        name=config.exp_name,
        project=config.project_name,
        config={
            "config_name": config.name,
            **{
                f.name: getattr(config, f.name)
                for f in dataclasses.fields(config)
                if isinstance(getattr(config, f.name), int | float | str)
            },
        },
        dir=str(checkpoint_dir),
        mode=mode,
        settings=wandb.Settings(silent=True, console="off"),
    )


def train(config: _config.TrainConfig) -> _utils.TrainState:
    """Runs training as `config` says and returns the final train state."""
    sharding.initialize_distributed()
    accelerator.ensure_gpu_used(allow_cpu=config.allow_cpu)
    allocator.keep_freed_memory()
    compilation_cache.enable()
    logger.info(
        "Process %d/%d, %d local / %d global devices (%s); XLA_PYTHON_CLIENT_MEM_FRACTION=%s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.default_backend(),
        os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "default"),
    )
    if config.batch_size % jax.device_count():
        raise ValueError(
            f"batch_size: expected a multiple of the device count {jax.device_count()}, got {config.batch_size}"
        )

    mesh = sharding.make_mesh(config.fsdp_devices)
    data_sharding = sharding.data_sharding(mesh)
    checkpoint_dir = config.checkpoint_dir
    resuming = _checkpoints.check_checkpoint_dir(checkpoint_dir, overwrite=config.overwrite, resume=config.resume)
    data_config = _resolve_norm_stats(config)

    init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
    manager = None
    if resuming:
        manager = _checkpoints.initialize_checkpoint_dir(checkpoint_dir, keep_period=config.keep_period)
    state, state_sharding = init_train_state(config, init_rng, mesh, resume_from=manager)
    start_step = int(jax.device_get(state.step))
    if resuming:
        logger.info("Resumed from step %d of %s", start_step, checkpoint_dir)

    loader = _data_loader.create_data_loader(
        config, sharding=data_sharding, data_config=data_config, start_step=start_step
    )
    batches = iter(loader)
    first_batch = next(batches)
    if manager is None:
        # Weights, tokenizer and data are all in hand: only now may --overwrite replace an earlier run.
        manager = _checkpoints.initialize_checkpoint_dir(
            checkpoint_dir, keep_period=config.keep_period, overwrite=config.overwrite
        )
    norm_stats = (
        {data_config.asset_id: data_config.norm_stats} if data_config.norm_stats and data_config.asset_id else {}
    )
    metrics = MetricsLog(checkpoint_dir, resumed_step=start_step if resuming else None)
    wandb_run = _init_wandb(config, checkpoint_dir, resuming=resuming)
    lr_schedule = config.lr_schedule.create()

    # The loop carries the state as its flat list of arrays: flattening the nested nnx state again for every call
    # costs milliseconds of Python per step, which a small model's step (the ALOHA sim demo's ~60 ms) feels.
    leaves, treedef = jax.tree.flatten(state)

    def flat_step(rng: jax.Array, leaves: list[jax.Array], batch: Any) -> tuple[list[jax.Array], dict]:
        new_state, info = train_step(config, rng, jax.tree.unflatten(treedef, leaves), batch)
        new_leaves, new_treedef = jax.tree.flatten(new_state)
        assert new_treedef == treedef, "train_step changed the structure of the train state"
        return new_leaves, info

    leaf_shardings = treedef.flatten_up_to(state_sharding)
    step_fn = jax.jit(
        flat_step,
        in_shardings=(sharding.replicated(mesh), leaf_shardings, data_sharding),
        out_shardings=(leaf_shardings, sharding.replicated(mesh)),
        donate_argnums=(1,),
    )
    del state  # its arrays are donated to the first step
    batches = itertools.chain([first_batch], batches)
    progress = tqdm.tqdm(
        range(start_step, config.num_train_steps),
        initial=start_step,
        total=config.num_train_steps,
        dynamic_ncols=True,
        disable=jax.process_index() != 0,
    )
    pending: list[dict] = []
    for step in progress:
        leaves, info = step_fn(train_rng, leaves, next(batches))
        pending.append(info)
        last_step = step == config.num_train_steps - 1
        if step % config.log_interval == 0 or last_step:
            summary = {k: float(np.mean([jax.device_get(i[k]) for i in pending])) for k in pending[0]}
            summary |= {"step": step, "learning_rate": float(lr_schedule(step))}
            pending = []
            progress.set_postfix(
                loss=f"{summary['loss']:.4f}",
                grad_norm=f"{summary['grad_norm']:.3f}",
                lr=f"{summary['learning_rate']:.2e}",
            )
            metrics.append(summary)
            if wandb_run is not None:
                wandb_run.log(summary, step=step)
        # Checkpoint `step` holds the state after step `step`'s update (the original numbering: a 30,000 step
        # run ends with checkpoint 29999); resuming from it continues with step `step + 1`.
        if (step % config.save_interval == 0 and step > start_step) or last_step:
            _checkpoints.save_state(manager, jax.tree.unflatten(treedef, leaves), norm_stats, step)
            metrics.draw_loss_curve()
    manager.close()
    if wandb_run is not None:
        wandb_run.finish()
    return jax.tree.unflatten(treedef, leaves)
