"""scripts/serve_policy.py: a trained debug checkpoint served as a subprocess answers our client; CLI and tables."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import tyro

from openpi.models import model as _model
from openpi.policies import aloha_policy
from openpi.policies import calvin_policy
from openpi.policies import droid_policy
from openpi.policies import libero_policy
from openpi.policies import policy_config
from openpi.policies import robots
from openpi.policies import ur5_policy
from openpi.shared import download
from openpi.training import config as _config
from shared import test_accelerator

from .conftest import REPO
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


def test_cli_network_safety_flags_reach_the_args_and_limits_are_on_by_default():
    defaults = tyro.cli(serve_policy.Args, args=[])
    assert (defaults.tls_cert, defaults.tls_key, defaults.max_frame_bytes) == (None, None, 64 * 1024 * 1024)
    assert (defaults.handshake_timeout_s, defaults.max_connections) == (10.0, 64)
    args = tyro.cli(
        serve_policy.Args,
        args=["--tls-cert", "c.pem", "--tls-key", "k.pem", "--handshake-timeout-s", "3", "--max-connections", "5"],
    )
    assert (args.tls_cert, args.tls_key, args.handshake_timeout_s, args.max_connections) == ("c.pem", "k.pem", 3.0, 5)
    assert serve_policy.tls_context(defaults) is None


def test_a_bad_tls_flag_stops_the_server_before_the_policy_loads(tmp_path):
    with pytest.raises(ValueError, match="--tls-key: required with --tls-cert"):
        serve_policy.main(serve_policy.Args(tls_cert=str(tmp_path / "cert.pem")))
    with pytest.raises(FileNotFoundError, match="--tls-cert: expected a PEM file, but there is no file at"):
        serve_policy.main(serve_policy.Args(tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem")))


def test_env_names_are_the_five_of_the_readme_and_its_guides_ur5():
    assert [env.name for env in serve_policy.EnvMode] == ["ALOHA", "ALOHA_SIM", "DROID", "CALVIN", "LIBERO", "UR5"]


def test_every_default_checkpoint_is_of_its_family_and_its_config_exists():
    assert set(serve_policy.DEFAULT_CHECKPOINTS) == {ModelType.PI05, ModelType.PI0_FAST}
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


def test_every_env_of_the_readme_has_a_default_exported_model_of_its_table_and_a_processor():
    assert sorted(serve_policy.EXPORTED_MODELS) == sorted(
        ["pi0_base", "pi0_aloha", "pi0_aloha_towel", "pi0_aloha_sim", "pi0_droid", "pi0_calvin", "pi0_libero"]
    )
    assert set(serve_policy.DEFAULT_EXPORTED) == set(serve_policy.EnvMode) - {serve_policy.EnvMode.UR5}
    for name, directory in serve_policy.EXPORTED_MODELS.items():
        assert directory == f"s3://openpi-assets/exported/{name}/model"
    for exported in serve_policy.DEFAULT_EXPORTED.values():
        assert exported.dir in serve_policy.EXPORTED_MODELS.values()
        assert exported.processor
    assert serve_policy.DEFAULT_EXPORTED[serve_policy.EnvMode.ALOHA].processor == "trossen_biarm_single_base_cam_24dim"


@pytest.mark.slow
def test_without_a_subcommand_the_env_exported_model_of_the_readme_table_is_served(exported_debug, anonymous_s3):
    # The bucket holds the debug export where the README's table has pi0_aloha_sim.
    anonymous_s3.publish_directory(exported_debug, "openpi-assets", "exported/pi0_aloha_sim/model")
    args = tyro.cli(serve_policy.Args, args=["--env", "ALOHA_SIM", "--default_prompt", "my task"])
    assert args.policy == serve_policy.Default(model_type=ModelType.PI0)
    policy = serve_policy.create_policy(args)
    # Its processor is the only one: the env's default (huggingface_aloha_sim_transfer_cube) is not among them.
    assert policy.metadata["processor"] == "openpi/debug_aloha"
    observation = _aloha_observation(0)
    del observation["prompt"]
    assert policy.infer(observation)["actions"].shape == (10, aloha_policy.ALOHA_DIM)


def test_an_env_without_an_exported_model_has_no_default_policy_and_says_what_to_serve():
    args = tyro.cli(serve_policy.Args, args=["--env", "UR5"])
    with pytest.raises(ValueError, match=r"--env UR5: no default exported model .* policy:checkpoint"):
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


def test_help_documents_the_default_policy_the_model_family_switch_and_the_flags(capsys):
    with pytest.raises(SystemExit):
        tyro.cli(serve_policy.Args, args=["policy:default", "--help"])
    help_text = capsys.readouterr().out
    for part in ("--policy.model-type", "PI05", "PI0_FAST", "DEFAULT_EXPORTED", "DEFAULT_CHECKPOINTS"):
        assert part in help_text
    with pytest.raises(SystemExit):
        tyro.cli(serve_policy.Args, args=["--help"])
    help_text = capsys.readouterr().out
    for part in ("--allow-unnormalized", "norm_stats.json", "--allow-cpu", "uv sync --extra cuda"):
        assert part in help_text


# Each env's example observation and its robot's action dim.
ENV_EXAMPLES = {
    "ALOHA": (aloha_policy.make_aloha_example, aloha_policy.ALOHA_DIM),
    "ALOHA_SIM": (aloha_policy.make_aloha_example, aloha_policy.ALOHA_DIM),
    "DROID": (droid_policy.make_droid_example, droid_policy.DROID_ACTION_DIM),
    "CALVIN": (calvin_policy.make_calvin_example, calvin_policy.CALVIN_ACTION_DIM),
    "LIBERO": (libero_policy.make_libero_example, libero_policy.LIBERO_ACTION_DIM),
    "UR5": (ur5_policy.make_ur5_example, ur5_policy.UR5_DIM),
}


@pytest.mark.slow
@pytest.mark.parametrize("env", list(ENV_EXAMPLES))
def test_each_envs_default_policy_takes_its_observations_and_gives_its_actions(exported_debug, env):
    policy = serve_policy.create_default_policy(
        serve_policy.EnvMode[env], exported=serve_policy.Exported(dir=str(exported_debug))
    )
    make_example, action_dim = ENV_EXAMPLES[env]
    assert policy.infer(make_example())["actions"].shape == (10, action_dim)


def test_serve_policy_stops_at_start_on_an_idle_gpu_and_goes_on_with_allow_cpu(tmp_path):
    bin_dir = tmp_path / "bin"
    test_accelerator._fake_nvidia_smi(bin_dir, test_accelerator.H100)
    env = {key: value for key, value in os.environ.items() if key != "JAX_PLATFORMS"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    # UR5 has no default policy, so a server let past the GPU check stops at the next step, cheaply.
    command = [sys.executable, str(REPO / "scripts" / "serve_policy.py"), "--env", "UR5"]
    stopped = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode != 0
    last_line = stopped.stderr.strip().splitlines()[-1]
    for part in ("NVIDIA H100", "uv sync --extra cuda", "--allow-cpu"):
        assert part in last_line
    assert "Traceback" not in stopped.stderr

    allowed = subprocess.run(
        [*command, "--allow-cpu"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert "running on the CPU as --allow-cpu asks" in allowed.stderr
    assert "--env UR5: no default exported model" in allowed.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_an_envs_default_policy_prompts_with_its_robots_default_prompt(exported_debug, monkeypatch):
    exported = serve_policy.Exported(dir=str(exported_debug))
    observation = {key: value for key, value in aloha_policy.make_aloha_example().items() if key != "prompt"}
    with pytest.raises(ValueError, match="prompt"):
        serve_policy.create_default_policy(serve_policy.EnvMode.ALOHA_SIM, exported=exported).infer(observation)
    prompted = dataclasses.replace(aloha_policy.ALOHA_SIM, default_prompt="transfer the cube")
    monkeypatch.setitem(robots.ROBOTS, "aloha_sim", prompted)
    policy = serve_policy.create_default_policy(serve_policy.EnvMode.ALOHA_SIM, exported=exported)
    assert policy.infer(observation)["actions"].shape == (10, aloha_policy.ALOHA_DIM)
