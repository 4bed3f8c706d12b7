"""The config registry: names, CLI parsing and help, data configs of the debug and robot configs."""

import numpy as np
import pytest

from openpi.training import config as _config

from . import train_helpers

REQUIRED = [
    "pi0_aloha_sim",
    "pi0_aloha_towel",
    "pi0_aloha_pen_uncap",
    "pi0_libero",
    "pi0_libero_low_mem_finetune",
    "pi0_droid",
    "pi0_calvin",
    "ur5",
    "debug",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_registered_config_is_found_by_name(name):
    assert _config.get_config(name).name == name


def test_unknown_config_name_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'pi0_aloha_sim'"):
        _config.get_config("pi0_aloha_sin")


def test_cli_picks_config_and_overrides_fields():
    config = _config.cli(["pi0_aloha_sim", "--exp-name=my_experiment", "--overwrite", "--batch-size=4"])
    assert (config.name, config.exp_name, config.overwrite, config.batch_size) == (
        "pi0_aloha_sim",
        "my_experiment",
        True,
        4,
    )
    assert config.data.repo_id == "lerobot/aloha_sim_transfer_cube_human"


def test_cli_help_lists_train_config_fields(capsys):
    with pytest.raises(SystemExit):
        _config.cli(["pi0_aloha_sim", "--help"])
    text = capsys.readouterr().out
    for flag in ("--exp-name", "--resume", "--overwrite", "--num-train-steps", "--fsdp-devices", "--data.repo-id"):
        assert flag in text


def test_lora_config_freezes_base_weights_and_disables_ema():
    config = _config.get_config("pi0_libero_low_mem_finetune")
    assert config.ema_decay is None
    assert repr(config.freeze_filter) == repr(config.model.get_freeze_filter())


def test_debug_data_config_tokenizes_offline_aloha_samples(tmp_path, monkeypatch):
    train_helpers.isolate(monkeypatch, tmp_path)
    config = train_helpers.debug_config(tmp_path)
    data_config = config.data.create(config.assets_dirs, config.model)
    assert data_config.asset_id == "openpi/debug_aloha"
    assert data_config.norm_stats is None
    sample = {
        "images": {"cam_high": np.zeros((3, 32, 32), "float32")},
        "state": np.zeros(14),
        "prompt": "transfer cube",
    }
    for transform in (*data_config.data_transforms.inputs, *data_config.model_transforms.inputs):
        sample = transform(sample)
    assert sample["state"].shape == (config.model.action_dim,)
    assert sample["image"]["base_0_rgb"].shape == (64, 64, 3)
    # bos, a leading word marker, one token per character, then "\n" encoded as word marker + newline.
    assert sample["tokenized_prompt_mask"].sum() == 1 + 1 + len("transfer cube") + 2
    assert sample["tokenized_prompt"].max() < config.model.vocab_size


def test_resume_and_overwrite_together_are_refused(capsys):
    with pytest.raises(SystemExit):
        _config.cli(["debug", "--resume", "--overwrite"])
    assert "resume and overwrite" in capsys.readouterr().err
