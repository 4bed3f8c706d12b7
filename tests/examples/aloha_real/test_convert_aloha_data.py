"""convert_aloha_data_to_lerobot.py on hdf5 episodes in the ACT / ALOHA layout (raw and JPEG-compressed frames)."""

from __future__ import annotations

import io
import pathlib
import subprocess
import sys

import h5py
import numpy as np
import PIL.Image
import pytest

from openpi.lerobot import lerobot_dataset

from .. import example_modules

SCRIPT = example_modules.EXAMPLES_DIR / "aloha_real" / "convert_aloha_data_to_lerobot.py"
CAMERAS = ("cam_high", "cam_left_wrist")
HEIGHT, WIDTH = 24, 32


def _jpeg(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_episode(path: pathlib.Path, length: int, seed: int, *, compressed: bool) -> dict[str, np.ndarray]:
    """Writes an ALOHA episode file; returns the arrays a reader should get back (images decoded)."""
    rng = np.random.default_rng(seed)
    expected = {
        "observation.state": rng.normal(size=(length, 14)).astype(np.float32),
        "action": rng.normal(size=(length, 14)).astype(np.float32),
    }
    with h5py.File(path, "w") as file:
        file.attrs["sim"] = False
        file.attrs["compress"] = compressed
        file["/observations/qpos"] = expected["observation.state"].astype(np.float64)
        file["/observations/qvel"] = np.zeros((length, 14))
        file["/observations/effort"] = np.ones((length, 14))
        file["/action"] = expected["action"].astype(np.float64)
        for camera in CAMERAS:
            frames = rng.integers(0, 256, (length, HEIGHT, WIDTH, 3), dtype=np.uint8)
            if compressed:
                encoded = [_jpeg(frame) for frame in frames]
                rows = np.zeros((length, max(map(len, encoded)) + 17), np.uint8)  # zero-padded like ALOHA
                for row, data in zip(rows, encoded, strict=True):
                    row[: len(data)] = np.frombuffer(data, np.uint8)
                file[f"/observations/images/{camera}"] = rows
                frames = np.stack([np.asarray(PIL.Image.open(io.BytesIO(data))) for data in encoded])
            else:
                file[f"/observations/images/{camera}"] = frames
            expected[f"observation.images.{camera}"] = frames
    return expected


def _convert(raw_dir: pathlib.Path, root: pathlib.Path, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--raw-dir", str(raw_dir), "--repo-id", "test/aloha", "--root", str(root)]
    return subprocess.run([*command, *flags], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "jpeg"])
def test_episodes_convert_frame_for_frame(tmp_path, compressed):
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    episodes = [write_episode(raw_dir / f"episode_{i}.hdf5", 3 + i, i, compressed=compressed) for i in range(2)]
    result = _convert(raw_dir, tmp_path / "out", "--task", "fold the towel", "--mode", "image")
    assert result.returncode == 0, result.stderr

    dataset = lerobot_dataset.LeRobotDataset("test/aloha", root=tmp_path / "out")
    assert dataset.meta.fps == 50
    assert dataset.num_episodes == 2
    assert len(dataset) == 3 + 4
    assert dataset.features["observation.state"]["names"][6] == "left_gripper"
    assert dataset.features["observation.velocity"]["shape"] == [14]
    items = iter(dataset[i] for i in range(len(dataset)))
    for episode in episodes:
        for step in range(len(episode["action"])):
            item = next(items)
            assert item["task"] == "fold the towel"
            np.testing.assert_array_equal(item["observation.state"], episode["observation.state"][step])
            np.testing.assert_array_equal(item["action"], episode["action"][step])
            np.testing.assert_array_equal(item["observation.effort"], np.ones(14, np.float32))
            for camera in CAMERAS:
                image = np.round(item[f"observation.images.{camera}"] * 255).astype(np.uint8).transpose(1, 2, 0)
                np.testing.assert_array_equal(image, episode[f"observation.images.{camera}"][step])


def test_video_mode_writes_v3_videos(tmp_path):
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    write_episode(raw_dir / "episode_0.hdf5", 4, 0, compressed=False)
    result = _convert(raw_dir, tmp_path / "out", "--codebase-version", "v3.0")
    assert result.returncode == 0, result.stderr
    dataset = lerobot_dataset.LeRobotDataset("test/aloha", root=tmp_path / "out")
    assert dataset.meta.info["codebase_version"] == "v3.0"
    assert dataset.features["observation.images.cam_high"]["dtype"] == "video"
    assert dataset[3]["observation.images.cam_high"].shape == (3, HEIGHT, WIDTH)


def test_an_episode_without_actions_is_refused_by_name(tmp_path):
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    with h5py.File(raw_dir / "episode_0.hdf5", "w") as file:
        file["/observations/qpos"] = np.zeros((3, 14))
    result = _convert(raw_dir, tmp_path / "out")
    assert result.returncode != 0
    assert "missing ['/action']" in result.stderr


def test_an_empty_folder_is_refused(tmp_path):
    result = _convert(tmp_path, tmp_path / "out")
    assert result.returncode != 0
    assert "no episode_*.hdf5 files" in result.stderr
