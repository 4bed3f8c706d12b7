"""Training data: a dataset, its transform pipeline, and a deterministic, resumable, per-process batch loader.

The order of samples depends only on (seed, step): step `s` of epoch `e = s // batches_per_epoch` takes the
`s % batches_per_epoch`-th run of `batch_size` indices of a permutation seeded by `(seed, e)` (the last
incomplete batch of an epoch is dropped). Each process loads its own contiguous slice of every global batch,
so restarting at any step (resume) or on any number of processes reproduces the same global batches.
"""

from collections.abc import Iterable, Iterator, Sequence
import concurrent.futures
import itertools
import logging
import pathlib
from typing import Any, Literal, Protocol

import jax
import numpy as np

from openpi import transforms as _transforms
from openpi.lerobot import lerobot_dataset
from openpi.models import model as _model
from openpi.models import tokenizer as _tokenizer
from openpi.shared import normalize as _normalize
from openpi.training import config as _config

logger = logging.getLogger(__name__)


class Dataset(Protocol):
    """Random access to samples (nested dicts of numpy arrays)."""

    def __getitem__(self, index: int) -> dict[str, Any]: ...

    def __len__(self) -> int: ...


class IterableDataset(Protocol):
    """Sequential access to samples (or, for some sources, to whole batches)."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def __len__(self) -> int: ...


class FakeDataset(Dataset):
    """Random samples in the model's input format; sample `i` is the same on every call."""

    def __init__(self, model_config: _model.BaseModelConfig, num_samples: int, seed: int = 0):
        self._observation_spec, self._action_spec = model_config.inputs_spec(batch_size=1)
        self._num_samples = num_samples
        self._seed = seed
        self._vocab_size = min(getattr(model_config, "vocab_size", 100), 100)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self._seed, int(index)])

        def make(spec: jax.ShapeDtypeStruct) -> np.ndarray:
            shape = spec.shape[1:]
            if spec.dtype == np.bool_:
                return np.ones(shape, bool)
            if np.issubdtype(spec.dtype, np.integer):
                return rng.integers(0, self._vocab_size, size=shape).astype(spec.dtype)
            return rng.uniform(-1.0, 1.0, size=shape).astype(spec.dtype)

        observation = jax.tree.map(make, self._observation_spec)
        return {**observation.to_dict(), "actions": make(self._action_spec)}

    def __len__(self) -> int:
        return self._num_samples


class TransformedDataset(Dataset):
    """A dataset whose samples pass through `transform` (one transform, or a sequence applied in order) on access."""

    def __init__(
        self, dataset: Dataset, transform: _transforms.DataTransformFn | Sequence[_transforms.DataTransformFn]
    ):
        self._dataset = dataset
        self._transform = _as_transform(transform)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._transform(self._dataset[index])

    def __len__(self) -> int:
        return len(self._dataset)


class IterableTransformedDataset(IterableDataset):
    """An iterable dataset whose samples pass through `transform` (one, or a sequence applied in order); with
    `is_batched`, the source yields batches, which are transformed sample by sample and stacked again."""

    def __init__(
        self,
        dataset: IterableDataset,
        transform: _transforms.DataTransformFn | Sequence[_transforms.DataTransformFn],
        *,
        is_batched: bool = False,
    ):
        self._dataset = dataset
        self._transform = _as_transform(transform)
        self._is_batched = is_batched

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for item in self._dataset:
            if not self._is_batched:
                yield self._transform(item)
                continue
            batch_size = len(jax.tree.leaves(item)[0])
            yield _collate([self._transform(jax.tree.map(lambda x, i=i: x[i], item)) for i in range(batch_size)])

    def __len__(self) -> int:
        return len(self._dataset)


def _as_transform(
    transform: _transforms.DataTransformFn | Sequence[_transforms.DataTransformFn],
) -> _transforms.DataTransformFn:
    """One transform from a transform or a sequence of them (the original passes a list)."""
    return _transforms.compose(transform) if isinstance(transform, Sequence) else transform


def is_fake(data_config: _config.DataConfig) -> bool:
    return data_config.repo_id in (None, "fake")


def open_lerobot_dataset(
    data_config: _config.DataConfig, action_horizon: int | None = None
) -> lerobot_dataset.LeRobotDataset:
    """The LeRobot dataset of `data_config` (generated first if the config says so), with action chunks of
    `action_horizon` rows for the `action_sequence_keys` when given."""
    if data_config.generate_dataset is not None:
        data_config.generate_dataset()
    metadata = lerobot_dataset.LeRobotDatasetMetadata(
        data_config.repo_id, local_files_only=data_config.local_files_only
    )
    delta_timestamps = None
    if action_horizon is not None:
        delta_timestamps = {
            key: [t / metadata.fps for t in range(action_horizon)] for key in data_config.action_sequence_keys
        }
    return lerobot_dataset.LeRobotDataset(
        data_config.repo_id, delta_timestamps=delta_timestamps, local_files_only=data_config.local_files_only
    )


def create_dataset(
    data_config: _config.DataConfig, model_config: _model.BaseModelConfig, *, action_horizon: int | None = None
) -> Dataset:
    """The raw dataset: LeRobot frames with action chunks of `action_horizon` rows (default: the model's), their
    `prompt` set from the frame's task when the config says `prompt_from_task`; or fake model inputs."""
    if is_fake(data_config):
        return FakeDataset(model_config, num_samples=1024)
    dataset = open_lerobot_dataset(data_config, action_horizon or model_config.action_horizon)
    if data_config.prompt_from_task:
        return TransformedDataset(dataset, _transforms.PromptFromLeRobotTask(dataset.meta.tasks))
    return dataset


def create_torch_dataset(
    data_config: _config.DataConfig, action_horizon: int, model_config: _model.BaseModelConfig
) -> Dataset:
    """The original's name and call shape for `create_dataset` (its LeRobot reader needs no torch here)."""
    return create_dataset(data_config, model_config, action_horizon=action_horizon)


def sample_transforms(
    data_config: _config.DataConfig, *, normalize: bool = True, model_transforms: bool = True
) -> _transforms.DataTransformFn:
    """Dataset sample (with its prompt, see `create_dataset`) → model inputs: repack, robot transforms, normalize,
    model transforms."""
    steps = [*data_config.repack_transforms.inputs, *data_config.data_transforms.inputs]
    if normalize:
        steps.append(_transforms.Normalize(data_config.norm_stats, use_quantiles=data_config.use_quantile_norm))
    if model_transforms:
        steps += data_config.model_transforms.inputs
    return _transforms.compose(steps)


def transform_dataset(dataset: Dataset, data_config: _config.DataConfig, *, skip_norm_stats: bool = False) -> Dataset:
    if is_fake(data_config):
        return dataset
    if data_config.norm_stats is None and not skip_norm_stats:
        logger.warning(
            "%s: no norm stats (run scripts/compute_norm_stats.py); training on unnormalized data", data_config.repo_id
        )
    return TransformedDataset(dataset, sample_transforms(data_config, normalize=not skip_norm_stats))


def transform_iterable_dataset(
    dataset: IterableDataset,
    data_config: _config.DataConfig,
    *,
    skip_norm_stats: bool = False,
    is_batched: bool = False,
) -> IterableDataset:
    """`transform_dataset` for an iterable dataset (`is_batched`: it yields whole batches)."""
    if is_fake(data_config):
        return dataset
    transform = sample_transforms(data_config, normalize=not skip_norm_stats)
    return IterableTransformedDataset(dataset, transform, is_batched=is_batched)


def _collate(samples: Sequence[dict]) -> dict:
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *samples)


class DataLoader:
    """Yields `(Observation, actions)` global batches, step after step, from `start_step` on: `num_batches` of them,
    or forever (epoch after epoch).

    With `sharding`, every batch is a global `jax.Array` assembled from each process's local slice; otherwise
    numpy. `num_workers` threads load samples and the next batch is prefetched while the current one trains.
    `data_config()` returns the `data_config` the loader was built from (None if it was not given one).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        sharding: jax.sharding.Sharding | None = None,
        num_workers: int = 0,
        start_step: int = 0,
        process_index: int | None = None,
        process_count: int | None = None,
        num_batches: int | None = None,
        data_config: _config.DataConfig | None = None,
    ):
        if num_batches is not None and num_batches < 0:
            raise ValueError(f"num_batches: expected a non-negative count or None (endless), got {num_batches}")
        self._process_index = jax.process_index() if process_index is None else process_index
        self._process_count = jax.process_count() if process_count is None else process_count
        if batch_size % self._process_count:
            raise ValueError(
                f"batch_size: expected a multiple of the process count {self._process_count}, got {batch_size}"
            )
        if len(dataset) < batch_size:
            raise ValueError(
                f"batch_size: the dataset has only {len(dataset)} samples, fewer than one batch of {batch_size}"
            )
        self._dataset = dataset
        self._batch_size = batch_size
        self._local_batch_size = batch_size // self._process_count
        self._seed = seed
        self._shuffle = shuffle
        self._sharding = sharding
        self._start_step = start_step
        self._num_batches = num_batches
        self._data_config = data_config
        self._pool = concurrent.futures.ThreadPoolExecutor(num_workers) if num_workers > 0 else None
        self._prefetcher = concurrent.futures.ThreadPoolExecutor(1)

    def data_config(self) -> _config.DataConfig | None:
        return self._data_config

    @property
    def batches_per_epoch(self) -> int:
        return len(self._dataset) // self._batch_size

    def global_indices(self, step: int) -> np.ndarray:
        """Dataset indices of the global batch at `step`."""
        epoch, position = divmod(step, self.batches_per_epoch)
        order = np.arange(len(self._dataset))
        if self._shuffle:
            order = np.random.default_rng([self._seed, epoch]).permutation(order)
        return order[position * self._batch_size : (position + 1) * self._batch_size]

    def local_indices(self, step: int) -> np.ndarray:
        """This process's slice of the global batch at `step`."""
        begin = self._process_index * self._local_batch_size
        return self.global_indices(step)[begin : begin + self._local_batch_size]

    def _load(self, step: int) -> dict:
        indices = [int(i) for i in self.local_indices(step)]
        if self._pool is None:
            return _collate([self._dataset[i] for i in indices])
        return _collate(list(self._pool.map(self._dataset.__getitem__, indices)))

    def _place(self, tree: Any) -> Any:
        """Local arrays → global `jax.Array`s under `sharding` (unchanged without one)."""
        if self._sharding is None:
            return tree
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._sharding, np.asarray(x)), tree)

    def _local_batches(self) -> Iterator[dict]:
        """This process's collated samples of each step, the next step's loaded while the current one is used."""
        end = None if self._num_batches is None else self._start_step + self._num_batches
        steps = itertools.count(self._start_step) if end is None else iter(range(self._start_step, end))
        pending = None if (step := next(steps, None)) is None else self._prefetcher.submit(self._load, step)
        while pending is not None:
            local = pending.result()
            pending = None if (step := next(steps, None)) is None else self._prefetcher.submit(self._load, step)
            yield local

    def __iter__(self) -> Iterator[tuple[_model.Observation, Any]]:
        for local in self._local_batches():
            actions = local.pop("actions")
            yield self._place(_model.Observation.from_dict(local)), self._place(actions)


class TorchDataLoader(DataLoader):
    """The original's batch loader, by name and call shape, on `DataLoader` (no torch): yields dicts of batched
    arrays (`local_batch_size` samples per process), `num_batches` of them or forever.

    As in the original, the batches are `jax.Array`s laid out by `sharding`, by default split over all devices.
    `sampler` (a torch sampler) is not supported; order and shuffling follow `seed` as in `DataLoader`.
    """

    def __init__(
        self,
        dataset: Dataset,
        local_batch_size: int,
        *,
        sharding: jax.sharding.Sharding | None = None,
        shuffle: bool = False,
        sampler: Any = None,
        num_batches: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        framework: Literal["jax", "pytorch"] = "jax",
    ):
        _check_framework(framework)
        if sampler is not None:
            raise ValueError("sampler: torch samplers are not supported (no torch here); expected None")
        if sharding is None:
            mesh = jax.sharding.Mesh(jax.devices(), ("B",))
            sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("B"))
        super().__init__(
            dataset,
            batch_size=local_batch_size * jax.process_count(),
            seed=seed,
            shuffle=shuffle,
            sharding=sharding,
            num_workers=num_workers,
            num_batches=num_batches,
        )

    def __iter__(self) -> Iterator[dict]:  # type: ignore[override]
        for local in self._local_batches():
            yield self._place(local)


class DataLoaderImpl:
    """The original's adapter from a loader of batch dicts (e.g. `TorchDataLoader`) to `(Observation, actions)`
    batches, with the data config they were made with."""

    def __init__(self, data_config: _config.DataConfig, data_loader: Iterable[dict]):
        self._data_config = data_config
        self._data_loader = data_loader

    def data_config(self) -> _config.DataConfig:
        return self._data_config

    def __iter__(self) -> Iterator[tuple[_model.Observation, Any]]:
        for batch in self._data_loader:
            yield _model.Observation.from_dict(batch), batch["actions"]


def _check_framework(framework: str) -> None:
    if framework != "jax":
        raise ValueError(f"framework: expected 'jax' (there is no PyTorch training here), got {framework!r}")


def create_data_loader(
    config: _config.TrainConfig,
    *,
    sharding: jax.sharding.Sharding | None = None,
    data_config: _config.DataConfig | None = None,
    start_step: int = 0,
    shuffle: bool = True,
    skip_norm_stats: bool = False,
    num_batches: int | None = None,
    framework: Literal["jax", "pytorch"] = "jax",
) -> DataLoader:
    """The train config's data loader, positioned at `start_step`: `num_batches` batches, or endless.

    `framework` is accepted for the original's call shape; only "jax" is supported.
    """
    if data_config is None:
        data_config = config.data.create(config.assets_dirs, config.model)
    return create_torch_data_loader(
        data_config,
        config.model,
        config.model.action_horizon,
        config.batch_size,
        sharding=sharding,
        skip_norm_stats=skip_norm_stats,
        shuffle=shuffle,
        num_batches=num_batches,
        num_workers=config.num_workers,
        seed=config.seed,
        framework=framework,
        start_step=start_step,
    )


def create_torch_data_loader(
    data_config: _config.DataConfig,
    model_config: _model.BaseModelConfig,
    action_horizon: int,
    batch_size: int,
    *,
    sharding: jax.sharding.Sharding | None = None,
    skip_norm_stats: bool = False,
    shuffle: bool = False,
    num_batches: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    framework: Literal["jax", "pytorch"] = "jax",
    start_step: int = 0,
) -> DataLoader:
    """A `DataLoader` of `(Observation, actions)` global batches of `batch_size` over `data_config`'s dataset, under
    the original's name and call shape (its torch data loader is `DataLoader` here)."""
    _check_framework(framework)
    dataset = create_dataset(data_config, model_config, action_horizon=action_horizon)
    return DataLoader(
        transform_dataset(dataset, data_config, skip_norm_stats=skip_norm_stats),
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        sharding=sharding,
        num_workers=num_workers,
        start_step=start_step,
        num_batches=num_batches,
        data_config=data_config,
    )


def norm_stats_batches(
    data_config: _config.DataConfig,
    model_config: _model.BaseModelConfig,
    *,
    batch_size: int = 1024,
    max_frames: int | None = None,
) -> tuple[Iterator[dict[str, np.ndarray]], int]:
    """Batches of `{"state", "actions"}` after the repack and robot transforms, for computing norm stats, and
    the number of batches.

    LeRobot datasets are read column-wise (`hf_columns`): no video is decoded. Each frame passes through the
    transforms with its numeric columns, its action chunk and a 1×1 placeholder per camera.
    """
    if is_fake(data_config):
        dataset = FakeDataset(model_config, num_samples=max_frames or 1024)
        indices = np.arange(len(dataset))
        chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
        batches = (_collate([{k: dataset[int(i)][k] for k in ("state", "actions")} for i in chunk]) for chunk in chunks)
        return batches, len(chunks)

    dataset = open_lerobot_dataset(data_config)
    columns = dataset.hf_columns()
    num_frames = len(dataset) if max_frames is None else min(max_frames, len(dataset))
    # Each frame's chunk: the next `action_horizon` rows, clamped to the frame's episode.
    episodes = dataset.episode_data_index
    episode_of_frame = np.searchsorted(episodes["to"], np.arange(len(dataset)), side="right")
    chunk = np.arange(len(dataset))[:, None] + np.arange(model_config.action_horizon)[None, :]
    chunk = np.clip(chunk, episodes["from"][episode_of_frame][:, None], episodes["to"][episode_of_frame][:, None] - 1)
    chunked = {key: columns[key][chunk] for key in data_config.action_sequence_keys}
    placeholders = {key: np.zeros((3, 1, 1), np.float32) for key in dataset.meta.camera_keys}
    transform = sample_transforms(data_config, normalize=False, model_transforms=False)
    if data_config.prompt_from_task:
        transform = _transforms.compose([_transforms.PromptFromLeRobotTask(dataset.meta.tasks), transform])

    def frame(index: int) -> dict[str, np.ndarray]:
        sample = {key: column[index] for key, column in columns.items()}
        sample |= {key: values[index] for key, values in chunked.items()} | placeholders
        result = transform(sample)
        return {"state": np.asarray(result["state"]), "actions": np.asarray(result["actions"])}

    starts = range(0, num_frames, batch_size)
    batches = (_collate([frame(i) for i in range(start, min(start + batch_size, num_frames))]) for start in starts)
    return batches, len(starts)


def compute_norm_stats(
    config: _config.TrainConfig, *, max_frames: int | None = None, batch_size: int = 1024, progress: bool = True
) -> pathlib.Path:
    """Computes the norm stats of the config's dataset into `<assets_dirs>/<asset_id>/norm_stats.json`.

    No prompt is tokenized, so the tokenizers of the model transforms are never loaded (nor downloaded)."""
    with _tokenizer.deferred_loading():
        data_config = config.data.create(config.assets_dirs, config.model)
    if data_config.asset_id is None:
        raise ValueError(f"{config.name}: the data config has no asset_id (nor repo_id) to save norm stats under")
    batches, num_batches = norm_stats_batches(data_config, config.model, batch_size=batch_size, max_frames=max_frames)
    stats = _normalize.compute_norm_stats(batches, num_batches=num_batches, progress=progress)
    return _normalize.save(config.assets_dirs / data_config.asset_id, stats)
