"""Not from the README: what the guide's steps need offline — a small generated UR5 dataset with the guide's keys,
and PaliGemma's tokenizer in the download cache (a stand-in: the debug character model)."""

import numpy as np

from openpi.lerobot import lerobot_dataset


def write_ur5_dataset(repo_id: str, *, num_episodes: int = 2, length: int = 12, image_size: int = 32) -> None:
    """A LeRobot dataset under `$HF_LEROBOT_HOME/<repo_id>` with the guide's keys (`joints` [6], `gripper` [1],
    `base_rgb`, `wrist_rgb`, `actions` [7], a task): the arm drifts to a target while the gripper closes; each action
    is the next state, the gripper a step ahead.

    The cameras are uint8 HWC array features, the "uint8 RGB" the guide assumes: its `UR5Inputs` passes images on
    unconverted, and LeRobot's `image` / `video` features come back as float CHW, which the model transforms refuse.
    """
    image = {"dtype": "uint8", "shape": (image_size, image_size, 3), "names": ["height", "width", "channel"]}
    features = {
        "joints": {"dtype": "float32", "shape": (6,), "names": None},
        "gripper": {"dtype": "float32", "shape": (1,), "names": None},
        "base_rgb": image,
        "wrist_rgb": image,
        "actions": {"dtype": "float32", "shape": (7,), "names": None},
    }
    dataset = lerobot_dataset.LeRobotDataset.create(repo_id, fps=10, features=features, robot_type="ur5")
    rng = np.random.default_rng(0)
    for _ in range(num_episodes):
        joints, target = rng.normal(0, 0.5, 6), rng.normal(0, 0.5, 6)
        for t in range(length):
            gripper = t / (length - 1)
            next_joints = joints + 0.2 * (target - joints)
            dataset.add_frame(
                {
                    "joints": joints.astype(np.float32),
                    "gripper": np.array([gripper], np.float32),
                    "base_rgb": np.full((image_size, image_size, 3), 20 * t, np.uint8),
                    "wrist_rgb": np.full((image_size, image_size, 3), 255 - 20 * t, np.uint8),
                    "actions": np.append(next_joints, min(1.0, gripper + 0.1)).astype(np.float32),
                    "task": "pick up the cube",
                }
            )
            joints = next_joints
        dataset.save_episode()
    dataset.finalize()
