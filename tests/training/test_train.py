"""Training end to end on the debug configs: overfitting, resume equivalence, run directory rules, checkpoints."""

import dataclasses
import json
import types

import flax.nnx as nnx
import jax
import numpy as np
import pytest

from openpi.models import model as _model
from openpi.shared import normalize
from openpi.training import sharding
from openpi.training import trainer

from . import train_helpers


@pytest.fixture
def root(tmp_path, monkeypatch):
    train_helpers.isolate(monkeypatch, tmp_path)
    return tmp_path


def _leaves(state) -> list[np.ndarray]:
    return [np.asarray(jax.device_get(leaf), np.float32) for leaf in jax.tree.leaves(state)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One set of debug runs shared by the tests below: 6 steps straight, and 3 steps + a refused restart +
    `--resume` to 6 steps, the latter logging to wandb without credentials (offline, no network)."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as monkeypatch:
        train_helpers.isolate(monkeypatch, root)
        for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("NETRC", str(root / "no-netrc"))
        straight_config = train_helpers.debug_config(root, exp_name="straight", num_train_steps=6)
        straight = trainer.train(straight_config)
        split_config = train_helpers.debug_config(root, exp_name="split", num_train_steps=3, wandb_enabled=True)
        trainer.train(split_config)
        wandb_id = (split_config.checkpoint_dir / trainer.WANDB_ID_FILE).read_text()
        with pytest.raises(FileExistsError) as refused:
            trainer.train(dataclasses.replace(split_config, num_train_steps=6))
        resumed = trainer.train(dataclasses.replace(split_config, num_train_steps=6, resume=True))
    return types.SimpleNamespace(
        straight=straight,
        straight_config=straight_config,
        resumed=resumed,
        split_config=split_config,
        first_wandb_id=wandb_id,
        refused=refused.value,
    )


def test_resume_gives_the_same_params_as_uninterrupted_training(runs):
    assert int(runs.resumed.step) == int(runs.straight.step) == 6
    # Same data order, noise and optimizer state: equal up to float32 rounding.
    for name in ("params", "ema_params", "opt_state"):
        straight, resumed = _leaves(getattr(runs.straight, name)), _leaves(getattr(runs.resumed, name))
        for a, b in zip(straight, resumed, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6, err_msg=name)


def test_checkpoint_holds_ema_params_readable_by_restore_params_and_norm_stats(runs):
    config = runs.straight_config
    step_dir = config.checkpoint_dir / "5"
    params = _model.restore_params(step_dir / "params", restore_type=np.ndarray)
    expected = jax.device_get(nnx.to_pure_dict(runs.straight.ema_params))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)
    config.model.load(params)
    asset_id = config.data.create(config.assets_dirs, config.model).asset_id
    stats = normalize.load(step_dir / "assets" / asset_id)
    assert stats["state"].mean.shape == (14,)
    assert (config.checkpoint_dir / "loss_curve.png").stat().st_size > 0
    logged = [json.loads(line) for line in (config.checkpoint_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [0, 1, 2, 3, 4, 5]
    assert all(np.isfinite(r["loss"]) and r["learning_rate"] > 0 for r in logged)


def test_resumed_run_continues_its_metrics_log(runs):
    run_dir = runs.split_config.checkpoint_dir
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [0, 1, 2, 3, 4, 5]


def test_existing_run_needs_overwrite_or_resume(runs):
    assert "--overwrite" in str(runs.refused)
    assert "--resume" in str(runs.refused)
    with pytest.raises(ValueError, match="resume and overwrite"):
        dataclasses.replace(runs.split_config, overwrite=True, resume=True)


def test_wandb_without_credentials_logs_offline_and_resumes_the_same_run(runs):
    run_dir = runs.split_config.checkpoint_dir
    run_id = (run_dir / trainer.WANDB_ID_FILE).read_text()
    assert run_id == runs.first_wandb_id
    offline_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    # The first half and the resumed half: two local runs under the same id, merged by `wandb sync`.
    assert len(offline_runs) == 2
    for path in offline_runs:
        assert path.name.endswith(f"-{run_id}")
        assert (path / f"run-{run_id}.wandb").stat().st_size > 0


@pytest.mark.slow
def test_lora_training_changes_only_adapters_and_unfrozen_layers(root):
    config = train_helpers.debug_config(root, name="debug_lora", num_train_steps=2)
    initial, _ = trainer.init_train_state(
        config, jax.random.split(jax.random.key(config.seed))[0], sharding.make_mesh(1)
    )
    before = jax.device_get(nnx.to_pure_dict(initial.params))
    after = jax.device_get(nnx.to_pure_dict(trainer.train(config).params))
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
def test_debug_overfit_config_cuts_the_loss_tenfold_on_the_generated_dataset(root):
    config = train_helpers.debug_config(root, name="debug_overfit", log_interval=10, save_interval=1000)
    assert config.num_train_steps <= 300
    trainer.train(config)
    logged = [json.loads(line) for line in (config.checkpoint_dir / "metrics.jsonl").read_text().splitlines()]
    # The first record is the loss of the untrained model (step 0); the last three average the final 30 steps.
    assert logged[0]["step"] == 0
    final = np.mean([r["loss"] for r in logged[-3:]])
    assert final < logged[0]["loss"] / 10, [round(r["loss"], 4) for r in logged]
