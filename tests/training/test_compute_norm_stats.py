"""compute_norm_stats.py needs no tokenizer: offline, with an empty download cache, it computes the stats of a
config whose prompts the real PaliGemma (or pi0-FAST) tokenizer would tokenize."""

import dataclasses
import importlib.util
import pathlib

import pytest
import tyro

from openpi.models import tokenizer as _tokenizer
from openpi.shared import normalize
from openpi.training import config as _config
from openpi.training import data_loader
from openpi.training import debug_data

from . import train_helpers

_SCRIPT = pathlib.Path(__file__).parents[2] / "scripts" / "compute_norm_stats.py"
_spec = importlib.util.spec_from_file_location("openpi_compute_norm_stats_script", _SCRIPT)
compute_norm_stats = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compute_norm_stats)


def test_readme_command_computes_norm_stats_offline_without_the_tokenizer(tmp_path, monkeypatch, capsys):
    # `pi0_aloha_sim_demo_full` reads a local dataset and tokenizes with PaliGemma's sentencepiece model.
    config = _config.get_config("pi0_aloha_sim_demo_full")
    train_helpers.isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    debug_data.ensure_aloha_dataset(config.data.repo_id, num_episodes=2, episode_length=12)

    # uv run scripts/compute_norm_stats.py --config-name pi0_aloha_sim_demo_full
    compute_norm_stats.main(tyro.cli(compute_norm_stats.Args, args=["--config-name", config.name]))
    stats = normalize.load(tmp_path / "assets" / config.name / config.data.repo_id)
    assert stats["state"].mean.shape == stats["actions"].mean.shape == (14,)
    assert "Wrote" in capsys.readouterr().out
    cache = tmp_path / "openpi_data"
    assert not [path for path in cache.rglob("*") if path.is_file() and "tokenizer" in path.name]


def test_pi0_fast_norm_stats_need_neither_the_sentencepiece_model_nor_the_fast_vocabulary(tmp_path, monkeypatch):
    train_helpers.isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = train_helpers.debug_config(tmp_path, "debug_pi0_fast")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, tokenizer="paligemma"))
    path = data_loader.compute_norm_stats(config, progress=False)
    assert normalize.load(path.parent)["actions"].mean.shape == (14,)


def test_a_tokenizer_built_for_norm_stats_loads_its_model_when_first_used(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    with _tokenizer.deferred_loading():
        tokenizer = _tokenizer.PaligemmaTokenizer(16)
    with pytest.raises(FileNotFoundError, match=r"gs://big_vision/paligemma_tokenizer\.model"):
        tokenizer.tokenize("pick up the cube")
    # Outside the block a tokenizer loads its model when built, so a missing one shows at once.
    with pytest.raises(FileNotFoundError, match=r"gs://big_vision/paligemma_tokenizer\.model"):
        _tokenizer.PaligemmaTokenizer(16)
