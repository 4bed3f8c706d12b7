"""The config registry: names, CLI parsing and help, data configs of the debug and robot configs."""

import dataclasses

import numpy as np
import pytest

from openpi import transforms
from openpi.models import model as _model
from openpi.policies import aloha_policy
from openpi.policies import droid_policy
from openpi.policies import libero_policy
from openpi.policies import robots
from openpi.policies import ur5_policy
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


ModelType = _model.ModelType
# The original's pi0.5 and pi0-FAST configs: model type, action horizon, action dim, max token len.
PI05_AND_FAST = {
    "pi05_aloha": (ModelType.PI05, 50, 32, 200),
    "pi05_aloha_pen_uncap": (ModelType.PI05, 50, 32, 200),
    "pi05_droid": (ModelType.PI05, 15, 32, 200),
    "pi05_droid_finetune": (ModelType.PI05, 16, 32, 200),
    "pi05_full_droid_finetune": (ModelType.PI05, 16, 32, 200),
    "pi05_libero": (ModelType.PI05, 10, 32, 200),
    "pi0_fast_droid": (ModelType.PI0_FAST, 10, 8, 250),
    "pi0_fast_full_droid_finetune": (ModelType.PI0_FAST, 16, 8, 180),
    "pi0_fast_libero": (ModelType.PI0_FAST, 10, 7, 180),
    "pi0_fast_libero_low_mem_finetune": (ModelType.PI0_FAST, 10, 7, 180),
}
# A robot observation of each data config, with an action chunk of the robot's action dim.
ROBOT_EXAMPLES = {
    _config.LeRobotAlohaDataConfig: (aloha_policy.make_aloha_example, 14),
    _config.LeRobotDroidDataConfig: (droid_policy.make_droid_example, 8),
    _config.LeRobotLiberoDataConfig: (libero_policy.make_libero_example, 7),
}


@pytest.mark.parametrize("name", sorted(PI05_AND_FAST))
def test_pi05_and_pi0_fast_configs_match_the_original(name):
    model = _config.get_config(name).model
    assert (model.model_type, model.action_horizon, model.action_dim, model.max_token_len) == PI05_AND_FAST[name]


def test_pi05_libero_hides_the_state_and_trains_as_the_original():
    config = _config.get_config("pi05_libero")
    assert config.model.discrete_state_input is False
    assert _config.get_config("pi05_droid").model.discrete_state_input is True
    assert (config.batch_size, config.ema_decay, config.optimizer.clip_gradient_norm) == (256, 0.999, 1.0)
    schedule = config.lr_schedule
    assert (schedule.warmup_steps, schedule.peak_lr, schedule.decay_steps, schedule.decay_lr) == (
        10_000,
        5e-5,
        1_000_000,
        5e-5,
    )
    assert config.weight_loader.params_path == "s3://openpi-assets/checkpoints/pi05_base/params"


def test_pi0_fast_lora_config_freezes_the_gemma_base_weights_and_disables_ema():
    config = _config.get_config("pi0_fast_libero_low_mem_finetune")
    assert config.model.paligemma_variant == "gemma_2b_lora"
    assert config.ema_decay is None
    assert repr(config.freeze_filter) == repr(config.model.get_freeze_filter())
    assert config.weight_loader.params_path == "s3://openpi-assets/checkpoints/pi0_fast_base/params"


@pytest.mark.parametrize("name", [*sorted(PI05_AND_FAST), "debug_pi05", "debug_pi0_fast"])
def test_pi05_and_pi0_fast_data_pipelines_fill_the_model_inputs(name, tmp_path, monkeypatch):
    """Each config's robot and model transforms (with the offline debug tokenizers) turn a robot observation into
    exactly the cameras, state, actions and tokens its model reads, with quantile normalization."""
    train_helpers.isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    config = train_helpers.debug_config(tmp_path, name)
    model = config.model
    data_config = dataclasses.replace(config.data, tokenizer="debug").create(config.assets_dirs, model)
    assert data_config.use_quantile_norm
    make_example, robot_action_dim = ROBOT_EXAMPLES[type(config.data)]
    sample = make_example() | {"actions": np.zeros((model.action_horizon, robot_action_dim))}
    for transform in (*data_config.data_transforms.inputs, *data_config.model_transforms.inputs):
        sample = transform(sample)
    assert set(sample["image"]) == set(sample["image_mask"]) == set(model.image_keys)
    assert all(image.shape == (*model.image_resolution, 3) for image in sample["image"].values())
    assert sample["tokenized_prompt"].shape == (model.max_token_len,)
    if model.model_type == ModelType.PI0_FAST:
        # Unmasked padding cameras, state and actions padded by the robot transform, trained action tokens.
        assert all(sample["image_mask"].values())
        assert sample["token_loss_mask"].any()
        assert sample["state"].shape[-1] >= model.action_dim
        assert sample["actions"].shape == (model.action_horizon, max(model.action_dim, robot_action_dim))
    else:
        assert sample["state"].shape == (model.action_dim,)
        assert sample["actions"].shape == (model.action_horizon, model.action_dim)


@pytest.mark.parametrize(
    ("robot", "factory"),
    [
        (
            "ur5",
            _config.UR5DataConfig(repo_id="me/ur5", use_delta_joint_actions=True, default_prompt="be a good robot"),
        ),
        ("calvin", _config.LeRobotCalvinDataConfig(repo_id="me/calvin")),
        ("droid", _config.LeRobotDroidDataConfig(repo_id="me/droid", default_prompt="pick it up")),
    ],
)
def test_robot_data_config_reads_a_registered_robot_as_its_own_factory_does(robot, factory, tmp_path):
    generic = _config.RobotDataConfig(
        robot=robot,
        repo_id=factory.repo_id,
        use_delta_joint_actions=getattr(factory, "use_delta_joint_actions", False),
        default_prompt=getattr(factory, "default_prompt", None),
        tokenizer="debug",
    )
    model = _config.DEBUG_MODEL
    expected = dataclasses.replace(factory, tokenizer="debug").create(tmp_path, model)
    created = generic.create(tmp_path, model)
    for field in ("repo_id", "asset_id", "repack_transforms", "data_transforms", "action_sequence_keys"):
        assert getattr(created, field) == getattr(expected, field), field
    prompts = [
        [step for step in config.model_transforms.inputs if isinstance(step, transforms.InjectDefaultPrompt)]
        for config in (created, expected)
    ]
    assert prompts[0] == prompts[1]


def test_robot_data_config_names_the_registered_robots_for_an_unknown_one(tmp_path):
    with pytest.raises(ValueError, match=r"robot: expected one of \['aloha', .*'ur5'\], got 'ur6'"):
        _config.RobotDataConfig(robot="ur6", repo_id="me/ur6").create(tmp_path, _config.DEBUG_MODEL)


def test_a_robots_default_prompt_applies_where_the_data_config_names_none(tmp_path, monkeypatch):
    monkeypatch.setitem(robots.ROBOTS, "ur5", dataclasses.replace(ur5_policy.UR5, default_prompt="be a good robot"))
    for default_prompt, expected in ((None, "be a good robot"), ("wave", "wave")):
        data = _config.RobotDataConfig(robot="ur5", repo_id="me/ur5", default_prompt=default_prompt, tokenizer="debug")
        model_transforms = data.create(tmp_path, _config.DEBUG_MODEL).model_transforms.inputs
        assert transforms.InjectDefaultPrompt(expected) in model_transforms
