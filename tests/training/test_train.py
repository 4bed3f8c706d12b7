"""Training end to end on the debug configs: overfitting, resume equivalence, run directory rules, checkpoints."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from openpi.models import model as _model
from openpi.shared import normalize
from openpi.training import optimizer as _optimizer

from . import train_helpers

train = train_helpers.load_train_module()


@pytest.fixture
def root(tmp_path, monkeypatch):
    train_helpers.isolate(monkeypatch, tmp_path)
    return tmp_path


def _leaves(state) -> list[np.ndarray]:
    return [np.asarray(jax.device_get(leaf), np.float32) for leaf in jax.tree.leaves(state)]


def test_resume_gives_the_same_params_as_uninterrupted_training(root):
    straight = train.main(train_helpers.debug_config(root, exp_name="straight", num_train_steps=6))
    train.main(train_helpers.debug_config(root, exp_name="split", num_train_steps=3))
    resumed = train.main(train_helpers.debug_config(root, exp_name="split", num_train_steps=6, resume=True))

    assert int(resumed.step) == int(straight.step) == 6
    # Same data order, noise and optimizer state: equal up to float32 rounding.
    for name in ("params", "ema_params", "opt_state"):
        for a, b in zip(_leaves(getattr(straight, name)), _leaves(getattr(resumed, name)), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6, err_msg=name)


def test_checkpoint_holds_ema_params_readable_by_restore_params_and_norm_stats(root):
    config = train_helpers.debug_config(root, num_train_steps=3)
    state = train.main(config)
    step_dir = config.checkpoint_dir / "2"
    params = _model.restore_params(step_dir / "params", restore_type=np.ndarray)
    expected = jax.device_get(state.ema_params.to_pure_dict())
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)
    config.model.load(params)
    asset_id = config.data.create(config.assets_dirs, config.model).asset_id
    stats = normalize.load(step_dir / "assets" / asset_id)
    assert stats["state"].mean.shape == (14,)
    assert (config.checkpoint_dir / "loss_curve.png").stat().st_size > 0
    logged = [json.loads(line) for line in (config.checkpoint_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [0, 1, 2]


def test_existing_run_needs_overwrite_or_resume(root):
    config = train_helpers.debug_config(root, num_train_steps=1)
    train.main(config)
    with pytest.raises(FileExistsError, match=r"--overwrite.*--resume"):
        train.main(config)
    train.main(dataclasses.replace(config, overwrite=True))
    with pytest.raises(ValueError, match="resume and overwrite"):
        dataclasses.replace(config, overwrite=True, resume=True)


def test_lora_training_changes_only_adapters_and_unfrozen_layers(root):
    config = train_helpers.debug_config(root, name="debug_lora", num_train_steps=2)
    initial, _ = train.init_train_state(
        config, jax.random.split(jax.random.key(config.seed))[0], train.sharding.make_mesh(1)
    )
    before = jax.device_get(initial.params.to_pure_dict())
    after = jax.device_get(train.main(config).params.to_pure_dict())
    flat_before = dict(jax.tree_util.tree_flatten_with_path(before)[0])
    for path, value in jax.tree_util.tree_flatten_with_path(after)[0]:
        name = jax.tree_util.keystr(path)
        frozen = "llm" in name and "lora" not in name
        if frozen:
            assert value.dtype == np.dtype("bfloat16"), name
            np.testing.assert_array_equal(value, flat_before[path], err_msg=name)
    changed = [
        jax.tree_util.keystr(p)
        for p, v in jax.tree_util.tree_flatten_with_path(after)[0]
        if not np.array_equal(v, flat_before[p])
    ]
    assert any("lora" in name for name in changed)


@pytest.mark.slow
def test_debug_model_overfits_the_generated_dataset(root):
    config = train_helpers.debug_config(
        root,
        num_train_steps=300,
        log_interval=10,
        save_interval=1000,
        lr_schedule=_optimizer.CosineDecaySchedule(warmup_steps=20, peak_lr=3e-3, decay_steps=300, decay_lr=1e-4),
    )
    train.main(config)
    losses = [json.loads(line)["loss"] for line in (config.checkpoint_dir / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] / 4, losses
