"""generate_data.py: expert episodes written with our LeRobot writer, read back with LeRobotDataset."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from openpi.lerobot import lerobot_dataset

from .. import example_modules

sim, expert, generate_data = example_modules.load("aloha_sim", "sim", "expert", "generate_data")


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos") / "aloha_sim_demos"
    assert generate_data.generate(root, num_episodes=2, resolution=(32, 48), seed=3) == root
    return root


@pytest.mark.slow
def test_dataset_reads_back_with_the_expert_episodes(dataset_root):
    dataset = lerobot_dataset.LeRobotDataset("local/aloha_sim", root=dataset_root, local_files_only=True)
    assert dataset.meta.info["codebase_version"] == "v2.1"
    assert dataset.num_episodes == 2
    assert dataset.meta.tasks == {0: "Transfer cube"}
    assert dataset.meta.camera_keys == ["observation.images.cam_high"]

    simulation = sim.AlohaSim("gym_aloha/AlohaTransferCube-v0")
    simulation.reset(3)
    plan = expert.plan(simulation)
    columns = dataset.hf_columns(["action", "observation.state", "episode_index"])
    first_episode = columns["episode_index"] == 0
    length = int(first_episode.sum())
    assert 100 < length < len(plan)  # stops at success, before the plan's end
    np.testing.assert_allclose(columns["action"][first_episode], plan[:length], atol=1e-6)
    np.testing.assert_allclose(columns["observation.state"][0], simulation.state(), atol=1e-6)

    item = dataset[length - 1]
    assert item["task"] == "Transfer cube"
    assert item["observation.state"].shape == (14,)
    image = item["observation.images.cam_high"]
    assert image.shape == (3, 32, 48)
    assert image.std() > 0.03  # a decoded scene, not a blank frame


@pytest.mark.slow
def test_parallel_recording_writes_the_same_episodes(dataset_root, tmp_path):
    root = tmp_path / "parallel"
    script = example_modules.EXAMPLES_DIR / "aloha_sim" / "generate_data.py"
    command = [sys.executable, str(script), "--out-root", str(root), "--num-episodes", "2", "--seed", "3"]
    command += ["--resolution", "32", "48", "--num-workers", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    def columns(path):
        dataset = lerobot_dataset.LeRobotDataset("local/aloha_sim", root=path, local_files_only=True)
        return dataset.hf_columns(["action", "observation.state", "episode_index", "frame_index"])

    sequential, parallel = columns(dataset_root), columns(root)
    for key, values in sequential.items():
        np.testing.assert_array_equal(parallel[key], values, err_msg=key)


def test_worker_count_below_one_is_refused():
    episodes = generate_data.recorded_episodes("gym_aloha/AlohaTransferCube-v0", 0, ("top",), (32, 32), num_workers=0)
    with pytest.raises(ValueError, match="num_workers"):
        next(episodes)


@pytest.mark.slow
def test_existing_dataset_is_never_overwritten_by_default(dataset_root):
    with pytest.raises(FileExistsError, match="out_root"):
        generate_data.generate(dataset_root, num_episodes=1)
    assert not list(dataset_root.parent.glob(".*partial"))


def test_bad_episode_count_raises(tmp_path):
    with pytest.raises(ValueError, match="num_episodes"):
        generate_data.generate(tmp_path / "demos", num_episodes=0)
