"""Converts CALVIN's language-annotated segments into a LeRobot dataset for training.

A CALVIN split folder (e.g. `task_D_D/training`) holds one `episode_XXXXXXX.npz` per frame (`rgb_static`
200×200, `rgb_gripper` 84×84, `robot_obs` 15, `rel_actions` 7, ...) and
`lang_annotations/auto_lang_ann.npy` (a pickled dict: `info.indx` = [(start, end), ...] inclusive frame ranges,
`language.ann` = their instructions). Each annotated segment becomes one LeRobot episode.

    uv run examples/calvin/convert_calvin_data_to_lerobot.py --split-dir /data/task_D_D/training --repo-id me/calvin
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Literal

import numpy as np
import tyro

from openpi.lerobot import lerobot_dataset

FPS = 30
FEATURES = {
    "observation.images.rgb_static": {
        "dtype": "video",
        "shape": (200, 200, 3),
        "names": ["height", "width", "channel"],
    },
    "observation.images.rgb_gripper": {"dtype": "video", "shape": (84, 84, 3), "names": ["height", "width", "channel"]},
    "observation.state": {"dtype": "float32", "shape": (15,), "names": ["robot_obs"]},
    "action": {"dtype": "float32", "shape": (7,), "names": ["rel_actions"]},
}
# npz key → LeRobot feature.
FRAME_KEYS = {
    "rgb_static": "observation.images.rgb_static",
    "rgb_gripper": "observation.images.rgb_gripper",
    "robot_obs": "observation.state",
    "rel_actions": "action",
}


@dataclasses.dataclass
class Args:
    """Command line of the converter."""

    split_dir: pathlib.Path
    repo_id: str
    root: pathlib.Path | None = None
    # Cameras as mp4 videos, or as PNG images inside the parquet files (lossless).
    mode: Literal["video", "image"] = "video"
    codebase_version: Literal["v2.1", "v3.0"] = "v2.1"
    # Convert at most this many annotated segments (0: all).
    max_episodes: int = 0


def load_annotations(split_dir: pathlib.Path) -> list[tuple[int, int, str]]:
    """`(start, end, instruction)` per annotated segment (frame indices inclusive)."""
    path = split_dir / "lang_annotations" / "auto_lang_ann.npy"
    if not path.is_file():
        raise FileNotFoundError(f"split_dir: no language annotations at {path}")
    annotations = np.load(path, allow_pickle=True).item()
    ranges, instructions = annotations["info"]["indx"], annotations["language"]["ann"]
    if len(ranges) != len(instructions):
        raise ValueError(f"{path}: {len(ranges)} ranges in info.indx but {len(instructions)} in language.ann")
    return [(int(start), int(end), str(text)) for (start, end), text in zip(ranges, instructions, strict=True)]


def load_frame(split_dir: pathlib.Path, index: int) -> dict[str, np.ndarray]:
    """One frame's features from `episode_<index>.npz`."""
    path = split_dir / f"episode_{index:07d}.npz"
    with np.load(path) as frame:
        if missing := [key for key in FRAME_KEYS if key not in frame]:
            raise ValueError(f"{path}: missing {missing}, expected a CALVIN frame with {list(FRAME_KEYS)}")
        arrays = {feature: frame[key] for key, feature in FRAME_KEYS.items()}
    return arrays | {key: arrays[key].astype(np.float32) for key in ("observation.state", "action")}


def convert(args: Args) -> int:
    """Writes every annotated segment as one episode; returns how many."""
    segments = load_annotations(args.split_dir)
    if args.max_episodes:
        segments = segments[: args.max_episodes]
    features = {
        key: {**value, "dtype": args.mode} if value["dtype"] == "video" else value for key, value in FEATURES.items()
    }
    dataset = lerobot_dataset.LeRobotDataset.create(
        args.repo_id,
        fps=FPS,
        features=features,
        root=args.root,
        robot_type="franka",
        use_videos=args.mode == "video",
        codebase_version=args.codebase_version,
    )
    for start, end, instruction in segments:
        for index in range(start, end + 1):
            dataset.add_frame(load_frame(args.split_dir, index) | {"task": instruction})
        dataset.save_episode()
    dataset.finalize()
    logging.info("Wrote %d episodes", len(segments))
    return len(segments)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    convert(tyro.cli(Args))
