"""The ALOHA hardware seen by the client: raw joint readings, camera frames and joint commands.

`AlohaHardware` is the interface `env.AlohaRealEnvironment` drives; `InterbotixAlohaHardware` implements it on
the real robot with ROS 1 and the Interbotix SDK (imported only when it is created, so everything else runs
without ROS). All values here are in the robot's own units: radians for joints, metres for the gripper fingers.
"""

from __future__ import annotations

import abc
import threading
import time

import numpy as np

ARMS = ("left", "right")
CAMERAS = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
# Puppet arm joints of the start pose (waist, shoulder, elbow, forearm roll, wrist angle, wrist rotate), radians.
START_ARM_JOINTS = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])


class AlohaHardware(abc.ABC):
    """Two puppet arms (6 joints + gripper each) and four cameras."""

    @abc.abstractmethod
    def read_arm_joints(self) -> np.ndarray:
        """Arm joint positions `[2, 6]` (left, right), radians."""

    @abc.abstractmethod
    def read_gripper_positions(self) -> np.ndarray:
        """Gripper finger positions `[2]` (left, right), metres."""

    @abc.abstractmethod
    def read_images(self) -> dict[str, np.ndarray]:
        """The latest frame of each camera in `CAMERAS`: HWC uint8 RGB."""

    @abc.abstractmethod
    def command(self, arm_joints: np.ndarray, gripper_joints: np.ndarray) -> None:
        """Sends joint targets without waiting: arms `[2, 6]` and gripper joint angles `[2]`, radians."""

    @abc.abstractmethod
    def move_to(self, arm_joints: np.ndarray, gripper_joints: np.ndarray, duration_s: float) -> None:
        """Moves smoothly to the targets over `duration_s` and returns once there."""


class InterbotixAlohaHardware(AlohaHardware):
    """The real ALOHA: puppet arms `puppet_left` / `puppet_right` and `usb_cam_*` cameras, through ROS 1.

    Needs a running ALOHA ROS launch (`roslaunch aloha 4arms_teleop.launch` or the puppet-only launch) and the
    `rospy`, `sensor_msgs`, `interbotix_xs_modules` and `interbotix_xs_msgs` Python packages (all pure Python, so
    they also work from the client's Python 3.11).
    """

    def __init__(self, init_node: bool = True) -> None:
        # ROS and the Interbotix SDK exist only on the robot computer (or in the example's Docker image).
        from interbotix_xs_modules.arm import InterbotixManipulatorXS
        from interbotix_xs_msgs.msg import JointSingleCommand
        import rospy
        from sensor_msgs.msg import Image
        from sensor_msgs.msg import JointState

        self._command_msg = JointSingleCommand
        self._lock = threading.Lock()
        self._joint_states: dict[str, np.ndarray] = {}
        self._images: dict[str, np.ndarray] = {}
        self._bots = {
            arm: InterbotixManipulatorXS(
                robot_model="vx300s",
                group_name="arm",
                gripper_name="gripper",
                robot_name=f"puppet_{arm}",
                init_node=init_node and arm == "left",
            )
            for arm in ARMS
        }
        for arm in ARMS:
            rospy.Subscriber(f"/puppet_{arm}/joint_states", JointState, self._on_joint_state, arm)
        for camera in CAMERAS:
            rospy.Subscriber(f"/usb_{camera}/image_raw", Image, self._on_image, camera)
        deadline = time.monotonic() + 10.0
        while len(self._joint_states) < len(ARMS) or len(self._images) < len(CAMERAS):
            if time.monotonic() > deadline:
                missing = [name for name in (*ARMS, *CAMERAS) if name not in self._joint_states | self._images]
                raise TimeoutError(f"No ROS messages after 10 s from: {missing}")
            time.sleep(0.05)

    def _on_joint_state(self, message, arm: str) -> None:
        with self._lock:
            self._joint_states[arm] = np.asarray(message.position, dtype=np.float64)

    def _on_image(self, message, camera: str) -> None:
        image = ros_image_to_rgb(message.data, message.height, message.width, message.step, message.encoding)
        with self._lock:
            self._images[camera] = image

    def read_arm_joints(self) -> np.ndarray:
        with self._lock:
            return np.stack([self._joint_states[arm][:6] for arm in ARMS])

    def read_gripper_positions(self) -> np.ndarray:
        # joint_states holds the 6 arm joints, the gripper joint, then the left finger's linear position.
        with self._lock:
            return np.array([self._joint_states[arm][7] for arm in ARMS])

    def read_images(self) -> dict[str, np.ndarray]:
        with self._lock:
            return dict(self._images)

    def command(self, arm_joints: np.ndarray, gripper_joints: np.ndarray) -> None:
        for arm, joints, gripper in zip(ARMS, arm_joints, gripper_joints, strict=True):
            self._bots[arm].arm.set_joint_positions(joints.tolist(), blocking=False)
            self._bots[arm].gripper.core.pub_single.publish(self._command_msg(name="gripper", cmd=float(gripper)))

    def move_to(self, arm_joints: np.ndarray, gripper_joints: np.ndarray, duration_s: float) -> None:
        start_arms = self.read_arm_joints()
        start_grippers = np.array([self._joint_states[arm][6] for arm in ARMS])
        steps = max(1, int(duration_s * 50))
        for fraction in np.linspace(0.0, 1.0, steps + 1)[1:]:
            self.command(
                start_arms + fraction * (arm_joints - start_arms),
                start_grippers + fraction * (gripper_joints - start_grippers),
            )
            time.sleep(duration_s / steps)


def ros_image_to_rgb(data: bytes, height: int, width: int, step: int, encoding: str) -> np.ndarray:
    """A `sensor_msgs/Image` payload (8-bit `rgb8` / `bgr8`, rows `step` bytes apart) → HWC uint8 RGB."""
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"image encoding: expected 'rgb8' or 'bgr8', got {encoding!r}")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(height, step)
    image = rows[:, : width * 3].reshape(height, width, 3)
    return np.ascontiguousarray(image[..., ::-1] if encoding == "bgr8" else image)
