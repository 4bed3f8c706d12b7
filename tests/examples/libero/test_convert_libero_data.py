"""convert_libero_data_to_lerobot.py on generated hdf5 demonstrations in LIBERO's robomimic layout."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import h5py
import numpy as np

from openpi.lerobot import lerobot_dataset

from .. import example_modules

SCRIPT = example_modules.EXAMPLES_DIR / "libero" / "convert_libero_data_to_lerobot.py"


def write_demos(path: pathlib.Path, lengths: list[int], seed: int, instruction: str | None) -> list[dict]:
    rng = np.random.default_rng(seed)
    demos = []
    with h5py.File(path, "w") as file:
        data = file.create_group("data")
        if instruction is not None:
            data.attrs["problem_info"] = json.dumps({"language_instruction": instruction, "problem_name": "x"})
        for index, length in enumerate(lengths):
            demo = {
                "agentview_rgb": rng.integers(0, 256, (length, 16, 16, 3), dtype=np.uint8),
                "eye_in_hand_rgb": rng.integers(0, 256, (length, 16, 16, 3), dtype=np.uint8),
                "ee_states": rng.normal(size=(length, 6)),
                "gripper_states": rng.normal(size=(length, 2)),
                "joint_states": rng.normal(size=(length, 7)),
                "actions": rng.uniform(-1, 1, size=(length, 7)),
            }
            group = data.create_group(f"demo_{index}")
            for key in ("agentview_rgb", "eye_in_hand_rgb", "ee_states", "gripper_states", "joint_states"):
                group[f"obs/{key}"] = demo[key]
            group["actions"] = demo["actions"]
            demos.append(demo)
    return demos


def test_demonstrations_convert_with_flipped_frames_and_instructions(tmp_path):
    raw = tmp_path / "libero_goal"
    raw.mkdir()
    # demo_10 sorts after demo_2 by number, not by name.
    with_info = write_demos(raw / "a_demo.hdf5", [2, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2], 0, "open the top drawer")
    named = write_demos(raw / "KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5", [2], 1, None)
    command = [sys.executable, str(SCRIPT), "--raw-dir", str(raw), "--repo-id", "test/libero", "--mode", "image"]
    result = subprocess.run([*command, "--root", str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr

    dataset = lerobot_dataset.LeRobotDataset("test/libero", root=tmp_path / "out")
    assert dataset.num_episodes == 12
    # Files in name order: upper-case KITCHEN_... first.
    expected = [(demo, step, "turn on the stove") for demo in named for step in range(len(demo["actions"]))]
    expected += [(demo, step, "open the top drawer") for demo in with_info for step in range(len(demo["actions"]))]
    assert len(dataset) == len(expected)
    for position, (demo, step, task) in enumerate(expected):
        item = dataset[position]
        assert item["task"] == task
        state = np.concatenate([demo["ee_states"][step], demo["gripper_states"][step]])
        np.testing.assert_allclose(item["state"], state, rtol=1e-6)
        np.testing.assert_allclose(item["actions"], demo["actions"][step], rtol=1e-6)
        image = np.round(item["image"] * 255).astype(np.uint8).transpose(1, 2, 0)
        np.testing.assert_array_equal(image, demo["agentview_rgb"][step][::-1, ::-1])


def test_files_without_demonstrations_are_refused(tmp_path):
    with h5py.File(tmp_path / "x_demo.hdf5", "w") as file:
        file["other"] = np.zeros(3)
    command = [sys.executable, str(SCRIPT), "--raw-dir", str(tmp_path), "--repo-id", "test/libero"]
    result = subprocess.run([*command, "--root", str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "no 'data' group" in result.stderr
