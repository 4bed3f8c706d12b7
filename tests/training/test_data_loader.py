"""Data loader: deterministic order from (seed, step), per-process slices of one global batch, norm stats batches."""

import numpy as np

from openpi.shared import normalize
from openpi.training import data_loader

from . import train_helpers


class _Indices:
    def __init__(self, size: int):
        self._size = size

    def __getitem__(self, index: int) -> dict:
        return {"state": np.array([index], np.float32)}

    def __len__(self) -> int:
        return self._size


def test_batches_depend_only_on_seed_and_step_and_processes_split_them():
    full = data_loader.DataLoader(_Indices(50), batch_size=8, seed=3, process_index=0, process_count=1)
    halves = [
        data_loader.DataLoader(_Indices(50), batch_size=8, seed=3, start_step=7, process_index=i, process_count=2)
        for i in range(2)
    ]
    for step in range(7, 20):
        global_batch = full.global_indices(step)
        assert len(set(global_batch.tolist())) == 8
        np.testing.assert_array_equal(np.concatenate([h.local_indices(step) for h in halves]), global_batch)
    # Every epoch (6 batches of 8 out of 50) visits distinct samples; epochs are shuffled differently.
    epoch = np.concatenate([full.global_indices(step) for step in range(6)])
    assert len(set(epoch.tolist())) == 48
    assert not np.array_equal(full.global_indices(0), full.global_indices(6))


def test_norm_stats_from_columns_match_stats_of_fully_decoded_samples(tmp_path, monkeypatch):
    train_helpers.isolate(monkeypatch, tmp_path)
    config = train_helpers.debug_config(tmp_path)
    path = data_loader.compute_norm_stats(config, progress=False)
    fast = normalize.load(path.parent)

    data_config = config.data.create(config.assets_dirs, config.model)
    dataset = data_loader.create_dataset(data_config, config.model)
    transform = data_loader.sample_transforms(data_config, normalize=False, model_transforms=False)
    samples = [transform(dataset[i]) for i in range(len(dataset))]
    states = np.stack([s["state"] for s in samples])
    actions = np.stack([s["actions"] for s in samples])
    np.testing.assert_allclose(fast["state"].mean, states.mean(0), atol=1e-5)
    np.testing.assert_allclose(fast["actions"].mean, actions.reshape(-1, 14).mean(0), atol=1e-5)
    np.testing.assert_allclose(fast["actions"].std, actions.reshape(-1, 14).std(0), atol=1e-4)


def test_frames_of_a_prompt_from_task_config_carry_their_task_as_prompt(tmp_path, monkeypatch):
    train_helpers.isolate(monkeypatch, tmp_path)
    config = train_helpers.debug_config(tmp_path)
    data_config = config.data.create(config.assets_dirs, config.model)
    assert data_config.prompt_from_task
    raw = data_loader.open_lerobot_dataset(data_config, config.model.action_horizon)
    dataset = data_loader.create_dataset(data_config, config.model)
    for index in (0, len(raw) - 1):
        frame = dataset[index]
        assert frame["prompt"] == raw.meta.tasks[int(frame["task_index"])]
