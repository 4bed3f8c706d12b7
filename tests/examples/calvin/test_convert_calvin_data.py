"""convert_calvin_data_to_lerobot.py on a generated CALVIN split folder (npz per frame + language annotations)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np

from openpi.lerobot import lerobot_dataset

from .. import example_modules

SCRIPT = example_modules.EXAMPLES_DIR / "calvin" / "convert_calvin_data_to_lerobot.py"


def write_split(split_dir: pathlib.Path, num_frames: int, segments: list[tuple[int, int, str]]) -> dict[int, dict]:
    """CALVIN's layout: episode_XXXXXXX.npz per frame, lang_annotations/auto_lang_ann.npy; returns the frames."""
    rng = np.random.default_rng(0)
    frames = {}
    (split_dir / "lang_annotations").mkdir(parents=True)
    for index in range(100, 100 + num_frames):
        frame = {
            "rgb_static": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
            "rgb_gripper": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8),
            "robot_obs": rng.normal(size=15),
            "rel_actions": rng.uniform(-1, 1, size=7),
            "actions": rng.normal(size=7),
            "scene_obs": rng.normal(size=24),
            "depth_static": rng.normal(size=(200, 200)).astype(np.float32),
        }
        np.savez(split_dir / f"episode_{index:07d}.npz", **frame)
        frames[index] = frame
    annotations = {
        "info": {"indx": [(start, end) for start, end, _ in segments], "episodes": []},
        "language": {"ann": [text for _, _, text in segments], "task": ["task"] * len(segments), "emb": None},
    }
    np.save(split_dir / "lang_annotations" / "auto_lang_ann.npy", annotations, allow_pickle=True)
    return frames


def test_each_annotated_segment_becomes_an_episode(tmp_path):
    segments = [(101, 103, "open the drawer"), (100, 101, "lift the red block")]
    frames = write_split(tmp_path / "training", 5, segments)
    command = [sys.executable, str(SCRIPT), "--split-dir", str(tmp_path / "training"), "--repo-id", "test/calvin"]
    result = subprocess.run(
        [*command, "--root", str(tmp_path / "out"), "--mode", "image"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr

    dataset = lerobot_dataset.LeRobotDataset("test/calvin", root=tmp_path / "out")
    assert dataset.meta.fps == 30
    assert dataset.num_episodes == 2
    expected = [(index, text) for start, end, text in segments for index in range(start, end + 1)]
    assert len(dataset) == len(expected)
    for position, (index, text) in enumerate(expected):
        item = dataset[position]
        assert item["task"] == text
        np.testing.assert_allclose(item["observation.state"], frames[index]["robot_obs"], rtol=1e-6)
        np.testing.assert_allclose(item["action"], frames[index]["rel_actions"], rtol=1e-6)
        for camera in ("rgb_static", "rgb_gripper"):
            image = np.round(item[f"observation.images.{camera}"] * 255).astype(np.uint8).transpose(1, 2, 0)
            np.testing.assert_array_equal(image, frames[index][camera])


def test_a_split_without_annotations_is_refused(tmp_path):
    command = [sys.executable, str(SCRIPT), "--split-dir", str(tmp_path), "--repo-id", "test/calvin"]
    result = subprocess.run([*command, "--root", str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "no language annotations" in result.stderr
