"""`train.py --overwrite` replaces an earlier run only once the new run's weights, tokenizer and data are in hand."""

import dataclasses
import pathlib

import pytest

from openpi.training import checkpoints as _checkpoints
from openpi.training import config as _config
from openpi.training import trainer
from openpi.training import weight_loaders

from . import train_helpers


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory) -> pathlib.Path:
    """One dataset, norm stats and tokenizer cache for every case (generated on first use)."""
    return tmp_path_factory.mktemp("overwrite")


def _files(directory: pathlib.Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def _unreachable_input(root: pathlib.Path, data: _config.LeRobotAlohaDataConfig, which: str) -> dict:
    """Overrides of the debug config that make one input of the run unreachable offline."""
    if which == "missing local weights":
        return {"weight_loader": weight_loaders.CheckpointWeightLoader(str(root / "no_such_run" / "9" / "params"))}
    if which == "uncached remote weights":
        return {"weight_loader": weight_loaders.CheckpointWeightLoader(_config.PI0_BASE_PARAMS)}
    if which == "uncached tokenizer":
        return {"data": dataclasses.replace(data, tokenizer="paligemma")}
    # A dataset that is neither local nor generated, and may not be fetched.
    base = _config.DataConfig(prompt_from_task=True, local_files_only=True)
    return {"data": dataclasses.replace(data, repo_id="test/no_such_dataset", base_config=base)}


@pytest.mark.parametrize(
    ("which", "named"),
    [
        ("missing local weights", "no_such_run"),
        ("uncached remote weights", "s3://openpi-assets/checkpoints/pi0_base/params"),
        ("uncached tokenizer", "gs://big_vision/paligemma_tokenizer.model"),
        ("missing dataset", "test/no_such_dataset"),
    ],
)
def test_overwrite_keeps_the_old_run_when_an_input_of_the_new_run_is_unreachable(
    shared_root, monkeypatch, which, named
):
    train_helpers.isolate(monkeypatch, shared_root)
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    config = train_helpers.debug_config(shared_root, exp_name=which.replace(" ", "_"), overwrite=True)
    config = dataclasses.replace(config, **_unreachable_input(shared_root, config.data, which))
    old_run = config.checkpoint_dir
    for name, content in {"9/params/weights": b"w", "9/assets/stats.json": b"{}", "metrics.jsonl": b"{}\n"}.items():
        (old_run / name).parent.mkdir(parents=True, exist_ok=True)
        (old_run / name).write_bytes(content)
    before = _files(old_run)

    with pytest.raises(Exception, match=named):
        trainer.train(config)

    assert _files(old_run) == before
    assert not [path for path in old_run.parent.iterdir() if path.name.startswith(f".{old_run.name}")]


def test_overwrite_replaces_the_old_run_without_leaving_it_beside_the_new_one(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "0").mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("{}")
    assert not _checkpoints.check_checkpoint_dir(run_dir, overwrite=True, resume=False)
    assert (run_dir / "metrics.jsonl").exists(), "checking must not touch the old run"
    _checkpoints.initialize_checkpoint_dir(run_dir, keep_period=None, overwrite=True).close()
    assert list(run_dir.iterdir()) == []
    assert [path.name for path in tmp_path.iterdir()] == ["run"]
