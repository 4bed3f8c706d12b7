"""scripts/serve_policy.py: a trained debug checkpoint served as a subprocess answers our client; CLI and tables."""

from __future__ import annotations

import numpy as np
import pytest
import tyro

from openpi import transforms
from openpi.models import model as _model
from openpi.models import pi0_fast
from openpi.policies import aloha_policy
from openpi.policies import calvin_policy
from openpi.policies import droid_policy
from openpi.policies import libero_policy
from openpi.policies import policy_config
from openpi.shared import download
from openpi.training import config as _config

from .conftest import load_script

serve_policy = load_script("serve_policy")
ModelType = _model.ModelType


def _aloha_observation(seed: int) -> dict:
    np.random.seed(seed)
    return aloha_policy.make_aloha_example()


@pytest.mark.slow
def test_served_debug_checkpoint_answers_aloha_observations_like_the_policy_in_process(
    serve_policy_process, debug_checkpoint, in_debug_env, tmp_path
):
    client = serve_policy_process(
        "--env",
        "ALOHA_SIM",
        "--record",
        "policy:checkpoint",
        "--policy.config=debug",
        f"--policy.dir={debug_checkpoint}",
    )
    served = client.infer(_aloha_observation(0))
    assert served["actions"].shape == (_config.get_config("debug").model.action_horizon, aloha_policy.ALOHA_DIM)
    assert set(served["server_timing"]) == {"infer_ms"}
    assert served["policy_timing"]["infer_ms"] > 0
    # A fresh policy draws the same noise for its first request as the fresh server did.
    local = policy_config.create_trained_policy(_config.get_config("debug"), debug_checkpoint)
    np.testing.assert_allclose(served["actions"], local.infer(_aloha_observation(0))["actions"], atol=1e-5)
    second = client.infer(_aloha_observation(1))
    assert "prev_total_ms" in second["server_timing"]
    assert sorted(path.name for path in (tmp_path / "policy_records").iterdir()) == ["step_0.npz", "step_1.npz"]


def test_cli_takes_the_flags_of_the_readme():
    args = tyro.cli(
        serve_policy.Args,
        args=["--env", "LIBERO", "--default_prompt", "my task", "--port", "9000", "--record", "--api-key", "secret"],
    )
    assert (args.env, args.default_prompt, args.port, args.record) == (
        serve_policy.EnvMode.LIBERO,
        "my task",
        9000,
        True,
    )
    assert args.api_key == "secret"
    assert isinstance(args.policy, serve_policy.Default)


def test_cli_subcommands_select_checkpoint_or_exported_policies():
    checkpoint = tyro.cli(
        serve_policy.Args,
        args=["--env", "ALOHA_SIM", "policy:checkpoint", "--policy.config=pi0_aloha_sim", "--policy.dir=ckpt/10000"],
    )
    assert checkpoint.policy == serve_policy.Checkpoint(config="pi0_aloha_sim", dir="ckpt/10000")
    exported = tyro.cli(
        serve_policy.Args,
        args=[
            "--env",
            "ALOHA",
            "policy:exported",
            "--policy.dir=s3://openpi-assets/exported/pi0_aloha/model",
            "--policy.processor=trossen_biarm_single_base_cam_24dim",
        ],
    )
    assert exported.policy == serve_policy.Exported(
        dir="s3://openpi-assets/exported/pi0_aloha/model", processor="trossen_biarm_single_base_cam_24dim"
    )


def test_cli_server_options_reach_the_args():
    args = tyro.cli(
        serve_policy.Args, args=["--max-batch-size", "16", "--max-wait-ms", "2.5", "--max-frame-bytes", "1000000"]
    )
    assert (args.max_batch_size, args.max_wait_ms, args.max_frame_bytes) == (16, 2.5, 1_000_000)


def test_env_names_are_the_five_of_the_readme():
    assert [env.name for env in serve_policy.EnvMode] == ["ALOHA", "ALOHA_SIM", "DROID", "CALVIN", "LIBERO"]


def test_every_env_has_a_default_pi0_checkpoint_and_every_default_config_exists():
    assert set(serve_policy.DEFAULT_CHECKPOINTS[ModelType.PI0]) == set(serve_policy.EnvMode)
    for model_type, checkpoints in serve_policy.DEFAULT_CHECKPOINTS.items():
        for checkpoint in checkpoints.values():
            assert _config.get_config(checkpoint.config).model.model_type == model_type
            assert checkpoint.dir.startswith("s3://openpi-assets/checkpoints/")


def test_pi05_and_fast_defaults_are_the_original_checkpoints():
    pi05, fast = serve_policy.DEFAULT_CHECKPOINTS[ModelType.PI05], serve_policy.DEFAULT_CHECKPOINTS[ModelType.PI0_FAST]
    EnvMode = serve_policy.EnvMode
    assert pi05 == {
        EnvMode.ALOHA: serve_policy.Checkpoint("pi05_aloha", "s3://openpi-assets/checkpoints/pi05_base"),
        EnvMode.DROID: serve_policy.Checkpoint("pi05_droid", "s3://openpi-assets/checkpoints/pi05_droid"),
        EnvMode.LIBERO: serve_policy.Checkpoint("pi05_libero", "s3://openpi-assets/checkpoints/pi05_libero"),
    }
    assert fast[EnvMode.DROID] == serve_policy.Checkpoint(
        "pi0_fast_droid", "s3://openpi-assets/checkpoints/pi0_fast_droid"
    )


def test_every_env_has_a_default_exported_model_of_the_readme_table_and_a_processor():
    assert sorted(serve_policy.EXPORTED_MODELS) == sorted(
        ["pi0_base", "pi0_aloha", "pi0_aloha_towel", "pi0_aloha_sim", "pi0_droid", "pi0_calvin", "pi0_libero"]
    )
    assert set(serve_policy.DEFAULT_EXPORTED) == set(serve_policy.EnvMode)
    for name, directory in serve_policy.EXPORTED_MODELS.items():
        assert directory == f"s3://openpi-assets/exported/{name}/model"
    for exported in serve_policy.DEFAULT_EXPORTED.values():
        assert exported.dir in serve_policy.EXPORTED_MODELS.values()
        assert exported.processor
    assert serve_policy.DEFAULT_EXPORTED[serve_policy.EnvMode.ALOHA].processor == "trossen_biarm_single_base_cam_24dim"


def test_without_a_subcommand_the_env_default_pi0_checkpoint_is_loaded(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    args = tyro.cli(serve_policy.Args, args=["--env", "LIBERO"])
    assert args.policy == serve_policy.Default(model_type=ModelType.PI0)
    with pytest.raises(download.OfflineCacheMissError, match=r"s3://openpi-assets/checkpoints/pi0_libero"):
        serve_policy.create_policy(args)


@pytest.mark.parametrize(
    ("env", "model_type", "url"),
    [
        ("DROID", "PI05", "s3://openpi-assets/checkpoints/pi05_droid"),
        ("ALOHA", "PI05", "s3://openpi-assets/checkpoints/pi05_base"),
        ("DROID", "PI0_FAST", "s3://openpi-assets/checkpoints/pi0_fast_droid"),
    ],
)
def test_default_subcommand_model_type_selects_the_family_checkpoint(monkeypatch, tmp_path, env, model_type, url):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    args = tyro.cli(serve_policy.Args, args=["--env", env, "policy:default", "--policy.model-type", model_type])
    assert args.policy == serve_policy.Default(model_type=ModelType[model_type])
    with pytest.raises(download.OfflineCacheMissError, match=url):
        serve_policy.create_policy(args)


def test_family_without_a_checkpoint_for_the_env_is_an_error_listing_its_envs():
    args = serve_policy.Args(env=serve_policy.EnvMode.CALVIN, policy=serve_policy.Default(model_type=ModelType.PI05))
    with pytest.raises(ValueError, match=r"PI05: no default checkpoint for --env CALVIN; .* ALOHA, DROID, LIBERO"):
        serve_policy.create_policy(args)


def test_help_documents_the_model_family_switch(capsys):
    with pytest.raises(SystemExit):
        tyro.cli(serve_policy.Args, args=["policy:default", "--help"])
    help_text = capsys.readouterr().out
    assert "--policy.model-type" in help_text
    assert "PI05" in help_text
    assert "PI0_FAST" in help_text


@pytest.mark.parametrize(
    ("env", "example", "action_dim"),
    [
        ("ALOHA", aloha_policy.make_aloha_example, aloha_policy.ALOHA_DIM),
        ("ALOHA_SIM", aloha_policy.make_aloha_example, aloha_policy.ALOHA_DIM),
        ("DROID", droid_policy.make_droid_example, droid_policy.DROID_ACTION_DIM),
        ("CALVIN", calvin_policy.make_calvin_example, calvin_policy.CALVIN_ACTION_DIM),
        ("LIBERO", libero_policy.make_libero_example, libero_policy.LIBERO_ACTION_DIM),
    ],
)
@pytest.mark.parametrize("model_type", [ModelType.PI0, ModelType.PI05, ModelType.PI0_FAST])
def test_env_data_transforms_take_the_env_observations_and_give_its_actions(env, example, action_dim, model_type):
    group = serve_policy.env_data_transforms(serve_policy.EnvMode[env], model_type, model_action_dim=32)
    inputs = transforms.compose(group.inputs)(example())
    expected_cameras = pi0_fast.FAST_IMAGE_KEYS if model_type == ModelType.PI0_FAST else _model.IMAGE_KEYS
    if env in ("DROID", "LIBERO"):  # the robots with pi0-FAST camera slots; the others keep pi0's
        assert set(inputs["image"]) == set(expected_cameras)
    # pi0-FAST pads the state here (it has no padding model transform); pi0 and pi0.5 after normalization.
    padded = inputs["state"].shape[-1] == 32
    assert padded == (model_type == ModelType.PI0_FAST)
    model_outputs = {"state": inputs["state"], "actions": np.zeros((10, 32), np.float32)}
    assert transforms.compose(group.outputs)(model_outputs)["actions"].shape == (10, action_dim)
