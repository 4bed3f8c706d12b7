"""Converts ALOHA hdf5 episodes (as recorded by ACT / ALOHA) into a LeRobot dataset for training.

Each `episode_*.hdf5` holds `/observations/qpos` [T, 14], `/action` [T, 14], optionally `/observations/qvel`
and `/observations/effort` [T, 14], and one image dataset per camera under `/observations/images/`: either raw
frames [T, H, W, 3] uint8 or JPEG-compressed frames [T, N] uint8 (one zero-padded encoded frame per row).

    uv run --extra examples examples/aloha_real/convert_aloha_data_to_lerobot.py \
        --raw-dir /data/aloha_towel --repo-id me/aloha_towel --task "fold the towel"
"""

from __future__ import annotations

import dataclasses
import io
import logging
import pathlib
from typing import Literal

import numpy as np
import PIL.Image
import tyro

from openpi.lerobot import lerobot_dataset

MOTORS = [
    f"{arm}_{joint}"
    for arm in ("left", "right")
    for joint in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
]
# hdf5 path → LeRobot feature, for the 14-d vectors.
VECTORS = {
    "/observations/qpos": "observation.state",
    "/action": "action",
    "/observations/qvel": "observation.velocity",
    "/observations/effort": "observation.effort",
}
REQUIRED = ("/observations/qpos", "/action")


@dataclasses.dataclass
class Args:
    """Command line of the converter."""

    # Folder with the `episode_*.hdf5` files.
    raw_dir: pathlib.Path
    # Dataset name; written to `--root`, default `$HF_LEROBOT_HOME/<repo-id>`.
    repo_id: str
    # Task instruction stored with every frame (the training prompt).
    task: str = "DEBUG"
    root: pathlib.Path | None = None
    fps: int = 50
    # Cameras as mp4 videos, or as PNG images inside the parquet files (lossless).
    mode: Literal["video", "image"] = "video"
    codebase_version: Literal["v2.1", "v3.0"] = "v2.1"


def decode_frames(frames: np.ndarray, *, name: str) -> np.ndarray:
    """Camera dataset → [T, H, W, 3] uint8: raw frames pass through, JPEG rows are decoded."""
    if frames.ndim == 4 and frames.shape[-1] == 3:
        return np.asarray(frames, dtype=np.uint8)
    if frames.ndim == 2 and frames.dtype == np.uint8:
        # Each row is one encoded frame followed by zero padding, which the decoder stops before.
        return np.stack([np.asarray(PIL.Image.open(io.BytesIO(row.tobytes())).convert("RGB")) for row in frames])
    raise ValueError(f"{name}: expected frames [T, H, W, 3] or encoded frames [T, N] uint8, got {frames.shape}")


def load_episode(path: pathlib.Path) -> dict[str, np.ndarray]:
    """One episode as {feature: array [T, ...]}, images decoded."""
    import h5py  # optional dependency: the `examples` extra

    with h5py.File(path, "r") as file:
        if missing := [key for key in REQUIRED if key not in file]:
            raise ValueError(f"{path}: missing {missing}; expected an ALOHA episode with {list(REQUIRED)}")
        episode = {feature: np.asarray(file[key], dtype=np.float32) for key, feature in VECTORS.items() if key in file}
        for camera in file.get("/observations/images", {}):
            name = f"/observations/images/{camera}"
            episode[f"observation.images.{camera}"] = decode_frames(file[name][()], name=f"{path}:{name}")
    length = len(episode["action"])
    for feature, values in episode.items():
        if values.ndim < 2 or len(values) != length:
            raise ValueError(f"{path}: {feature} has shape {values.shape}, expected {length} steps like /action")
        if feature in VECTORS.values() and values.shape[1:] != (len(MOTORS),):
            raise ValueError(f"{path}: {feature} expected shape [T, {len(MOTORS)}], got {values.shape}")
    return episode


def features_of(episode: dict[str, np.ndarray], mode: str) -> dict[str, dict]:
    """LeRobot features for the arrays of an episode."""
    features = {}
    for key, values in episode.items():
        if key.startswith("observation.images."):
            features[key] = {"dtype": mode, "shape": values.shape[1:], "names": ["height", "width", "channels"]}
        else:
            features[key] = {"dtype": "float32", "shape": values.shape[1:], "names": MOTORS}
    return features


def convert(args: Args) -> lerobot_dataset.LeRobotDataset:
    """Writes every episode of `args.raw_dir` (in name order) as one LeRobot episode."""
    paths = sorted(args.raw_dir.glob("episode_*.hdf5"))
    if not paths:
        raise FileNotFoundError(f"raw_dir: no episode_*.hdf5 files in {args.raw_dir}")
    dataset = None
    for path in paths:
        episode = load_episode(path)
        features = features_of(episode, args.mode)
        if dataset is None:
            dataset = lerobot_dataset.LeRobotDataset.create(
                args.repo_id,
                fps=args.fps,
                features=features,
                root=args.root,
                robot_type="aloha",
                use_videos=args.mode == "video",
                codebase_version=args.codebase_version,
            )
            expected = features
        elif features != expected:
            raise ValueError(f"{path}: features {features} differ from the first episode's {expected}")
        for step in range(len(episode["action"])):
            dataset.add_frame({key: values[step] for key, values in episode.items()} | {"task": args.task})
        dataset.save_episode()
        logging.info("Converted %s (%d frames)", path.name, len(episode["action"]))
    dataset.finalize()
    return dataset


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    convert(tyro.cli(Args))
