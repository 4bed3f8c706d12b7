"""Training-time real-time chunking end to end: `pi0_aloha_sim_demo_rtc` fine-tunes a `pi0_aloha_sim_demo`
checkpoint (on the generated debug ALOHA dataset instead of the MuJoCo demos) with the flags its docstring gives, and
the result serves observations carrying the previous chunk."""

import dataclasses

import flax.nnx as nnx
import jax
import numpy as np
import pytest

from openpi.models import model as _model
from openpi.policies import policy_config
from openpi.shared import normalize
from openpi.training import config as _config
from openpi.training import debug_data
from openpi.training import trainer

from . import train_helpers


def test_the_rtc_config_is_the_demo_config_with_training_time_rtc_from_the_demos_last_checkpoint():
    demo, rtc = _config.get_config("pi0_aloha_sim_demo"), _config.get_config("pi0_aloha_sim_demo_rtc")
    assert rtc.model == dataclasses.replace(demo.model, training_rtc_max_delay=8)
    assert rtc.model.training_rtc_max_delay < rtc.model.action_horizon
    last = f"data/aloha_sim/demo/checkpoints/pi0_aloha_sim_demo/demo/{demo.num_train_steps - 1}"
    assert rtc.weight_loader.params_path == f"{last}/params"
    assert rtc.data == dataclasses.replace(demo.data, assets=_config.AssetsConfig(assets_dir=f"{last}/assets"))
    assert (rtc.batch_size, rtc.allow_cpu) == (demo.batch_size, demo.allow_cpu)


@pytest.mark.slow
def test_fine_tuning_a_demo_checkpoint_with_training_time_rtc_serves_chunks_that_continue_the_previous_one(
    tmp_path, monkeypatch
):
    train_helpers.isolate(monkeypatch, tmp_path)
    demo_base = _config.get_config("pi0_aloha_sim_demo")
    small = {"batch_size": 4, "num_train_steps": 2, "log_interval": 1, "num_workers": 0}
    demo = dataclasses.replace(
        demo_base,
        exp_name="demo",
        checkpoint_base_dir=str(tmp_path / "checkpoints"),
        assets_base_dir=str(tmp_path / "assets"),
        data=dataclasses.replace(
            demo_base.data,
            repo_id=debug_data.DEBUG_ALOHA_REPO_ID,
            base_config=dataclasses.replace(
                demo_base.data.base_config, generate_dataset=debug_data.ensure_aloha_dataset
            ),
        ),
        **small,
    )
    trainer.train(demo)
    demo_checkpoint = demo.checkpoint_dir / "1"

    # The documented command, on the debug dataset the demo run generated.
    rtc = _config.cli(
        [
            "pi0_aloha_sim_demo_rtc",
            "--exp-name=rtc",
            f"--weight-loader.params-path={demo_checkpoint}/params",
            f"--data.assets.assets-dir={demo_checkpoint}/assets",
            f"--data.repo-id={debug_data.DEBUG_ALOHA_REPO_ID}",
            f"--checkpoint-base-dir={tmp_path / 'checkpoints'}",
            *(f"--{key.replace('_', '-')}={value}" for key, value in small.items()),
        ]
    )
    state = trainer.train(rtc)
    rtc_checkpoint = rtc.checkpoint_dir / "1"
    # It started from the demo's weights: two warm-up steps (learning rate ~1e-5) barely move them.
    demo_params = _model.restore_params(demo_checkpoint / "params", restore_type=np.ndarray)
    rtc_params = jax.device_get(nnx.to_pure_dict(state.params))
    differences = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(), demo_params, rtc_params)
    assert max(jax.tree.leaves(differences)) < 1e-3
    # ... and normalizes with the demo checkpoint's stats, which its checkpoint carries on.
    asset_id = debug_data.DEBUG_ALOHA_REPO_ID
    carried = normalize.load(rtc_checkpoint / "assets" / asset_id)
    np.testing.assert_array_equal(
        carried["actions"].mean, normalize.load(demo_checkpoint / "assets" / asset_id)["actions"].mean
    )

    policy = policy_config.create_trained_policy(rtc, rtc_checkpoint)
    rng = np.random.default_rng(0)
    prev_actions = rng.uniform(-0.5, 0.5, (12, 14))
    obs = {
        "state": rng.uniform(-0.5, 0.5, 14),
        "images": {"cam_high": rng.integers(0, 256, (3, 96, 96), dtype=np.uint8)},
        "prompt": "transfer the cube",
        "prev_actions": prev_actions,
        "inference_delay": 5,
    }
    actions = policy.infer(obs)["actions"]
    assert actions.shape == (rtc.model.action_horizon, 14)
    np.testing.assert_allclose(actions[:5], prev_actions[:5], atol=1e-5)
