"""Shared helpers of the training tests: isolated data/cache dirs, debug configs, a tokenizer stand-in."""

import dataclasses
import json
import pathlib

import pytest

from openpi.models import tokenizer as _tokenizer
from openpi.shared import download
from openpi.training import config as _config
from openpi.training import debug_data

REPO = pathlib.Path(__file__).parents[2]


def isolate(monkeypatch: pytest.MonkeyPatch, root: pathlib.Path) -> None:
    """Generated datasets, the debug tokenizer and norm stats go below `root`."""
    monkeypatch.setenv("HF_LEROBOT_HOME", str(root / "lerobot"))
    monkeypatch.setenv("OPENPI_DATA_HOME", str(root / "openpi_data"))


def debug_config(root: pathlib.Path, name: str = "debug", **overrides) -> _config.TrainConfig:
    settings = {
        "exp_name": "test",
        "checkpoint_base_dir": str(root / "checkpoints"),
        "assets_base_dir": str(root / "assets"),
        "log_interval": 1,
    }
    return dataclasses.replace(_config.get_config(name), **(settings | overrides))


def cache_paligemma_tokenizer_stand_in() -> pathlib.Path:
    """Puts the debug tokenizer into the download cache (`OPENPI_DATA_HOME`) as PaliGemma's, with the `.complete`
    marker that makes the download layer count it as complete, so `PaligemmaTokenizer` loads offline."""
    url = _tokenizer.PALIGEMMA_TOKENIZER_URL
    cached = download.get_cache_dir() / url.removeprefix("gs://")
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(debug_data.tokenizer_path().read_bytes())
    marker = cached.with_name(f".{cached.name}.complete")
    marker.write_text(json.dumps({"url": url, "files": {"": cached.stat().st_size}}))
    return cached
