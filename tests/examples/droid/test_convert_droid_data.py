"""convert_droid_data_to_lerobot.py's conversion core on in-memory RLDS episodes (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np
import pytest

from openpi.lerobot import lerobot_dataset

from .. import example_modules

(convert,) = example_modules.load("droid", "convert_droid_data_to_lerobot")
SHAPE = (8, 12, 3)


def rlds_episode(length: int, seed: int, instruction: bytes) -> dict:
    """An episode as `tfds.as_numpy` yields DROID's RLDS steps."""
    rng = np.random.default_rng(seed)
    steps = []
    for _ in range(length):
        observation = {camera: rng.integers(0, 256, SHAPE, dtype=np.uint8) for camera in convert.CAMERAS}
        observation |= {
            "joint_position": rng.normal(size=7),
            "gripper_position": rng.uniform(size=1),
            "cartesian_position": rng.normal(size=6),
        }
        action_dict = {"joint_velocity": rng.normal(size=7), "gripper_position": rng.uniform(size=1)}
        steps.append(
            {
                "observation": observation,
                "action_dict": action_dict,
                "language_instruction": instruction,
                "language_instruction_2": b"",
            }
        )
    return {"steps": steps}


def test_episodes_with_instructions_are_written_frame_for_frame(tmp_path):
    episodes = [rlds_episode(3, 0, b"put the marker in the cup"), rlds_episode(2, 1, b""), rlds_episode(4, 2, b"wipe")]
    dataset = lerobot_dataset.LeRobotDataset.create(
        "test/droid", fps=15, features=convert.features(SHAPE, camera_dtype="image"), root=tmp_path / "out"
    )
    assert convert.convert_episodes(episodes, dataset) == 2

    written = lerobot_dataset.LeRobotDataset("test/droid", root=tmp_path / "out")
    assert written.num_episodes == 2
    assert len(written) == 7
    rows = [written[i] for i in range(len(written))]
    for row, step in zip(rows, episodes[0]["steps"] + episodes[2]["steps"], strict=True):
        action = np.concatenate([step["action_dict"]["joint_velocity"], step["action_dict"]["gripper_position"]])
        np.testing.assert_allclose(row["actions"], action, rtol=1e-6)
        np.testing.assert_allclose(row["joint_position"], step["observation"]["joint_position"], rtol=1e-6)
        np.testing.assert_allclose(row["gripper_position"], step["observation"]["gripper_position"], rtol=1e-6)
        image = np.round(row["wrist_image_left"] * 255).astype(np.uint8).transpose(1, 2, 0)
        np.testing.assert_array_equal(image, step["observation"]["wrist_image_left"])
    assert [row["task"] for row in rows] == ["put the marker in the cup"] * 3 + ["wipe"] * 4


def test_the_second_instruction_is_used_when_the_first_is_empty():
    episode = rlds_episode(1, 0, b"")
    episode["steps"][0]["language_instruction_2"] = np.array(b"open the drawer")
    assert next(convert.episode_frames(episode))["task"] == "open the drawer"


def test_malformed_actions_are_reported_with_their_step():
    episode = rlds_episode(2, 0, b"x")
    episode["steps"][1]["action_dict"]["joint_velocity"] = np.zeros(6)
    with pytest.raises(ValueError, match=r"steps\[1\].action_dict: expected joint_velocity \(7,\)"):
        list(convert.episode_frames(episode))
