"""Converts the DROID RLDS dataset (TFDS format) into a LeRobot dataset for training.

Reading RLDS needs TensorFlow: `uv sync --extra droid`. The conversion itself works on plain episode dicts
(`{"steps": [{"observation": {...}, "action_dict": {...}, "language_instruction": ...}, ...]}`, numpy values),
which is what `tfds.as_numpy` yields.

    uv run --extra droid examples/droid/convert_droid_data_to_lerobot.py --data-dir /data/droid --repo-id me/droid
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import dataclasses
import itertools
import logging
import pathlib
from typing import Literal

import numpy as np
import tyro

from openpi.lerobot import lerobot_dataset

CAMERAS = ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left")
IMAGE_SHAPE = (180, 320, 3)


@dataclasses.dataclass
class Args:
    """Command line of the converter."""

    # Folder with the TFDS build of DROID (`droid/<version>/`), e.g. from gs://gresearch/robotics.
    data_dir: pathlib.Path
    repo_id: str
    root: pathlib.Path | None = None
    dataset_name: str = "droid"
    # Convert at most this many episodes (0: all).
    max_episodes: int = 0
    codebase_version: Literal["v2.1", "v3.0"] = "v2.1"


def features(image_shape: tuple[int, int, int] = IMAGE_SHAPE, camera_dtype: str = "video") -> dict[str, dict]:
    """LeRobot features in the keys of `--env DROID` (without `observation/`): cameras, joints, gripper, actions."""
    camera = {"dtype": camera_dtype, "shape": image_shape, "names": ["height", "width", "channel"]}
    cameras = dict.fromkeys(CAMERAS, camera)
    return cameras | {
        "joint_position": {"dtype": "float32", "shape": (7,), "names": ["joint_position"]},
        "gripper_position": {"dtype": "float32", "shape": (1,), "names": ["gripper_position"]},
        "actions": {"dtype": "float32", "shape": (8,), "names": ["actions"]},
    }


def _text(value) -> str:
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def episode_frames(episode: dict) -> Iterator[dict]:
    """The LeRobot frames of one RLDS episode: actions are joint velocities + gripper position (the control
    DROID was recorded with); the task is the step's first non-empty language instruction."""
    for index, step in enumerate(episode["steps"]):
        observation, action = step["observation"], step["action_dict"]
        frame = {camera: np.asarray(observation[camera], dtype=np.uint8) for camera in CAMERAS}
        frame["joint_position"] = np.asarray(observation["joint_position"], dtype=np.float32).reshape(7)
        frame["gripper_position"] = np.asarray(observation["gripper_position"], dtype=np.float32).reshape(1)
        velocity = np.asarray(action["joint_velocity"], dtype=np.float32).reshape(-1)
        gripper = np.asarray(action["gripper_position"], dtype=np.float32).reshape(-1)
        if velocity.shape != (7,) or gripper.shape != (1,):
            raise ValueError(
                f"steps[{index}].action_dict: expected joint_velocity (7,) and gripper_position (1,), "
                f"got {velocity.shape} and {gripper.shape}"
            )
        frame["actions"] = np.concatenate([velocity, gripper])
        instructions = [_text(step.get(key, b"")) for key in ("language_instruction", "language_instruction_2")]
        frame["task"] = next((text for text in instructions if text.strip()), "")
        yield frame


def convert_episodes(episodes: Iterable[dict], dataset: lerobot_dataset.LeRobotDataset) -> int:
    """Writes each episode that has a language instruction; returns how many were written."""
    written = 0
    for number, episode in enumerate(episodes):
        frames = list(episode_frames(episode))
        if not frames or not frames[0]["task"]:
            logging.info("Skipping episode %d: no language instruction", number)
            continue
        task = frames[0]["task"]
        for frame in frames:
            dataset.add_frame(frame | {"task": task})
        dataset.save_episode()
        written += 1
    dataset.finalize()
    return written


def load_rlds(data_dir: pathlib.Path, dataset_name: str) -> Iterable[dict]:
    """DROID episodes from a TFDS build, as numpy dicts (needs the `droid` extra)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(dataset_name, data_dir=str(data_dir))
    return tfds.as_numpy(builder.as_dataset(split="train"))


def main(args: Args) -> None:
    dataset = lerobot_dataset.LeRobotDataset.create(
        args.repo_id,
        fps=15,
        features=features(),
        root=args.root,
        robot_type="panda",
        codebase_version=args.codebase_version,
    )
    episodes = load_rlds(args.data_dir, args.dataset_name)
    if args.max_episodes:
        episodes = itertools.islice(episodes, args.max_episodes)
    logging.info("Wrote %d episodes", convert_episodes(episodes, dataset))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
