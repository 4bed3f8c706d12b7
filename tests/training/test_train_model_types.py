"""`scripts/train.py` end to end on the pi0.5 and pi0-FAST debug configs: quantile norm stats of the generated dataset,
a falling loss, and a checkpoint whose params load into the model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from openpi.models import model as _model
from openpi.shared import normalize
from openpi.training import debug_data

from . import train_helpers

STEPS = 20


@pytest.mark.slow
@pytest.mark.parametrize("name", ["debug_pi05", "debug_pi0_fast"])
def test_train_script_trains_the_debug_config_of_each_new_model_type(name, tmp_path):
    config = train_helpers.debug_config(tmp_path, name, num_train_steps=STEPS)
    env = os.environ | {"HF_LEROBOT_HOME": str(tmp_path / "lerobot"), "OPENPI_DATA_HOME": str(tmp_path / "data")}
    command = [
        sys.executable,
        str(train_helpers.REPO / "scripts" / "train.py"),
        name,
        f"--exp-name={config.exp_name}",
        f"--checkpoint-base-dir={config.checkpoint_base_dir}",
        f"--assets-base-dir={config.assets_base_dir}",
        f"--num-train-steps={STEPS}",
    ]
    result = subprocess.run(command, env=env, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    # Every prompt fitted into max_token_len.
    assert b"truncating" not in result.stderr

    logged = [json.loads(line) for line in (config.checkpoint_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in logged] == list(range(STEPS))
    first, last = np.mean([r["loss"] for r in logged[:3]]), np.mean([r["loss"] for r in logged[-3:]])
    assert last < 0.95 * first, [round(r["loss"], 3) for r in logged]

    # pi0.5 and pi0-FAST normalize with quantiles, which the generated dataset's stats carry.
    stats = normalize.load(config.assets_dirs / debug_data.DEBUG_ALOHA_REPO_ID)
    assert stats["state"].q01 is not None
    assert stats["actions"].q99 is not None
    step_dir = config.checkpoint_dir / str(STEPS - 1)
    assert (step_dir / "assets" / debug_data.DEBUG_ALOHA_REPO_ID / "norm_stats.json").is_file()
    config.model.load(_model.restore_params(step_dir / "params", restore_type=np.ndarray))
