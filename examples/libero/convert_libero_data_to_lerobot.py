"""Converts LIBERO hdf5 demonstrations (robomimic layout) into a LeRobot dataset in the keys of `--env LIBERO`.

Each `<task>_demo.hdf5` holds `data/demo_<i>/obs/{agentview_rgb, eye_in_hand_rgb, ee_states, gripper_states}`
and `data/demo_<i>/actions` [T, 7]; the task's instruction is `data.attrs["problem_info"]["language_instruction"]`
(else the file name). Frames are rotated 180° like the client's view; the state is `ee_states` (position 3,
axis-angle 3) + `gripper_states` (2).

    uv run --extra examples examples/libero/convert_libero_data_to_lerobot.py \
        --raw-dir ~/LIBERO/datasets/libero_spatial --repo-id me/libero_spatial
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import re
from typing import Literal

import numpy as np
import tyro

from openpi.lerobot import lerobot_dataset

FPS = 10


@dataclasses.dataclass
class Args:
    """Command line of the converter."""

    # Folder(s) of `*_demo.hdf5` files (e.g. one per suite).
    raw_dir: tuple[pathlib.Path, ...]
    repo_id: str
    root: pathlib.Path | None = None
    mode: Literal["video", "image"] = "video"
    codebase_version: Literal["v2.1", "v3.0"] = "v2.1"


def instruction(file, path: pathlib.Path) -> str:
    """The task's language instruction: from `problem_info`, else from `<SCENE>_<words>_demo.hdf5`."""
    info = file["data"].attrs.get("problem_info")
    if info is not None:
        return json.loads(info)["language_instruction"].strip().strip('"')
    words = re.sub(r"^([A-Z0-9]+_)+", "", path.stem.removesuffix("_demo"))
    return words.replace("_", " ")


def demo_frames(demo) -> dict[str, np.ndarray]:
    """One demonstration as LeRobot columns [T, ...]."""
    obs = demo["obs"]
    return {
        "image": np.asarray(obs["agentview_rgb"])[:, ::-1, ::-1],
        "wrist_image": np.asarray(obs["eye_in_hand_rgb"])[:, ::-1, ::-1],
        "state": np.concatenate([obs["ee_states"], obs["gripper_states"]], axis=1).astype(np.float32),
        "actions": np.asarray(demo["actions"], dtype=np.float32),
    }


def convert(args: Args) -> int:
    """Writes every demonstration of every file as one episode; returns how many."""
    import h5py  # optional dependency: the `examples` extra

    paths = sorted(path for raw_dir in args.raw_dir for path in raw_dir.glob("*.hdf5"))
    if not paths:
        raise FileNotFoundError(f"raw_dir: no .hdf5 files in {[str(d) for d in args.raw_dir]}")
    dataset, written = None, 0
    for path in paths:
        with h5py.File(path, "r") as file:
            if "data" not in file:
                raise ValueError(f"{path}: no 'data' group; expected LIBERO demonstrations data/demo_<i>")
            task = instruction(file, path)
            for name in sorted(file["data"], key=lambda name: int(name.rsplit("_", 1)[-1])):
                columns = demo_frames(file["data"][name])
                if dataset is None:
                    dataset = lerobot_dataset.LeRobotDataset.create(
                        args.repo_id,
                        fps=FPS,
                        features=_features(columns, args.mode),
                        root=args.root,
                        robot_type="panda",
                        use_videos=args.mode == "video",
                        codebase_version=args.codebase_version,
                    )
                for step in range(len(columns["actions"])):
                    dataset.add_frame({key: values[step] for key, values in columns.items()} | {"task": task})
                dataset.save_episode()
                written += 1
    dataset.finalize()
    logging.info("Wrote %d episodes", written)
    return written


def _features(columns: dict[str, np.ndarray], mode: str) -> dict[str, dict]:
    camera_names = ["height", "width", "channel"]
    return {
        "image": {"dtype": mode, "shape": columns["image"].shape[1:], "names": camera_names},
        "wrist_image": {"dtype": mode, "shape": columns["wrist_image"].shape[1:], "names": camera_names},
        "state": {"dtype": "float32", "shape": (8,), "names": ["state"]},
        "actions": {"dtype": "float32", "shape": (7,), "names": ["actions"]},
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    convert(tyro.cli(Args))
