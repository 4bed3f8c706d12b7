"""The README's "Fine-tuning to your own robot" guide followed as written, offline: its code pasted where it says
(`readme_guide`; the `EnvMode.UR5` case in scripts/serve_policy.py), then its commands on generated UR5 data —
norm stats, a few train steps of a tiny model, `serve_policy.py --env UR5 policy:checkpoint ...` as a real server
process, and the README's robot client running episodes against it."""

from __future__ import annotations

import inspect
import os
import pathlib
import re
import shutil
import sys

import numpy as np
import pytest
import tyro

from openpi.policies import policy_config
from openpi.training import config as _config
from openpi.training import data_loader
from openpi.training import trainer
from readme_guide import config as guide_config
from readme_guide import data as guide_data
from readme_guide import env as guide_env
from readme_guide import your_client_main
from training import train_helpers

from .conftest import REPO
from .conftest import free_port
from .conftest import load_script

serve_policy = load_script("serve_policy")
TRAIN_STEPS = 2

# The README's `create_default_policy` case for the UR5, verbatim.
GUIDE_UR5_CASE = """\
        case EnvMode.UR5:
            config = make_policy_config(
                input_layers=[
                    ur5_policy.UR5Inputs(action_dim=model.action_dim),
                ],
                output_layers=[
                    ur5_policy.UR5Outputs(),
                ],
            )
"""


def test_serve_policy_has_the_guides_ur5_env_and_its_create_default_policy_case():
    assert serve_policy.EnvMode.UR5.name == "UR5"
    assert GUIDE_UR5_CASE in inspect.getsource(serve_policy.create_default_policy)


@pytest.fixture
def guide_checkpoint(tmp_path, monkeypatch) -> pathlib.Path:
    """The guide's "Convert your dataset and train", offline: norm stats, then a few steps of its (tiny) config."""
    train_helpers.isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    guide_data.write_ur5_dataset(guide_config.REPO_ID)
    train_helpers.cache_paligemma_tokenizer_stand_in()
    config = guide_config.tiny_config(
        exp_name="my_experiment",
        batch_size=2,
        num_train_steps=TRAIN_STEPS,
        num_workers=0,
        wandb_enabled=False,
        checkpoint_base_dir=str(tmp_path / "checkpoints"),
        assets_base_dir=str(tmp_path / "assets"),
    )
    # uv run scripts/compute_norm_stats.py --config-name ur5
    data_loader.compute_norm_stats(config, progress=False)
    # uv run scripts/train.py ur5 --exp-name=my_experiment
    trainer.train(config)
    checkpoint = config.checkpoint_dir / str(TRAIN_STEPS - 1)
    assert (checkpoint / "assets" / guide_config.REPO_ID / "norm_stats.json").is_file()
    return checkpoint


@pytest.mark.slow
def test_readme_guide_serves_its_ur5_checkpoint_to_the_readme_client(
    guide_checkpoint, serve_policy_process, monkeypatch, tmp_path
):
    # uv run scripts/serve_policy.py --env UR5 policy:checkpoint --policy.config=ur5 --policy.dir=...
    environment = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    port = free_port()
    serve_policy_process(
        "--env",
        "UR5",
        "policy:checkpoint",
        f"--policy.config={guide_config.NAME}",
        f"--policy.dir={guide_checkpoint}",
        env=environment,
        port=port,
        command=[sys.executable, "-m", "readme_guide.serve"],
    )
    # python your_client_main.py: one episode of `done()` after 3 steps, a new chunk every 2 steps.
    monkeypatch.setattr(guide_env, "APPLIED_ACTIONS", [])
    your_client_main.main(your_client_main.Args(host="127.0.0.1", port=port, action_horizon=2))
    assert len(guide_env.APPLIED_ACTIONS) == guide_env.EPISODE_STEPS
    for action in guide_env.APPLIED_ACTIONS:
        assert action["actions"].shape == (7,)
        assert np.all(np.isfinite(action["actions"]))

    # The same checkpoint without the norm stats it was trained with is refused, naming the missing file, unless
    # --allow-unnormalized insists.
    bare = tmp_path / "without_norm_stats"
    shutil.copytree(guide_checkpoint / "params", bare / "params")
    monkeypatch.setitem(_config._CONFIGS_DICT, guide_config.NAME, guide_config.tiny_config())
    command = ["--env", "UR5", "policy:checkpoint", f"--policy.config={guide_config.NAME}", f"--policy.dir={bare}"]
    missing = f"{bare}/assets/{guide_config.REPO_ID}/norm_stats.json does not exist"
    with pytest.raises(policy_config.MissingNormStatsError, match=re.escape(missing) + ".*--allow-unnormalized"):
        serve_policy.create_policy(tyro.cli(serve_policy.Args, args=command))
    policy = serve_policy.create_policy(tyro.cli(serve_policy.Args, args=["--allow-unnormalized", *command]))
    assert policy.infer(guide_env.UR5Environment().get_observation())["actions"].shape == (10, 7)
