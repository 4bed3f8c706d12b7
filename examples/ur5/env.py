"""The UR5e of the UR5 guide as an `openpi_client` Environment: `joints` [6], `gripper` [1], two cameras.

`UR5Robot` is the hardware interface the environment drives; `RTDEUR5Robot` implements it on a real UR5e with
`ur_rtde` (arm), a Robotiq gripper on its URCap socket and two OpenCV cameras. Those libraries are imported only
when it is created, so everything else runs without them.
"""

from __future__ import annotations

import abc
import socket

import numpy as np

from openpi_client import image_tools
from openpi_client.runtime import environment as _environment

CAMERAS = ("base", "wrist")
IMAGE_SIZE = 224
# Joint positions (rad) of the start pose: base, shoulder, elbow, wrist 1-3.
HOME_JOINTS = np.array([0.0, -1.57, 1.57, -1.57, -1.57, 0.0])


class UR5Robot(abc.ABC):
    """A UR5 arm with a gripper and the base and wrist cameras."""

    @abc.abstractmethod
    def read_joints(self) -> np.ndarray:
        """Joint positions `[6]`, radians."""

    @abc.abstractmethod
    def read_gripper(self) -> float:
        """Gripper opening, 0 open … 1 closed."""

    @abc.abstractmethod
    def read_images(self) -> dict[str, np.ndarray]:
        """The latest frame of each camera in `CAMERAS`: HWC uint8 RGB."""

    @abc.abstractmethod
    def command(self, joints: np.ndarray, gripper: float) -> None:
        """Sends a joint target `[6]` (radians) and a gripper target (0 open … 1 closed) without waiting."""

    @abc.abstractmethod
    def move_to(self, joints: np.ndarray, gripper: float) -> None:
        """Moves to the targets at a safe speed and returns once there."""


class UR5Environment(_environment.Environment):
    """Observations as the `ur5` config's robot keys: `joints` [6], `gripper` [1], `base_rgb` and `wrist_rgb`
    (224×224 HWC uint8, letterboxed) and `prompt`; actions `{"actions": [7]}` = absolute joint targets +
    gripper. Episodes end by the runtime's step limit."""

    def __init__(self, robot: UR5Robot, prompt: str | None = None) -> None:
        self._robot = robot
        self._prompt = prompt

    def reset(self) -> None:
        self._robot.move_to(HOME_JOINTS, 0.0)

    def is_episode_complete(self) -> bool:
        return False

    def get_observation(self) -> dict:
        images = self._robot.read_images()
        if missing := [camera for camera in CAMERAS if camera not in images]:
            raise ValueError(f"images: missing cameras {missing}, expected {CAMERAS}")
        observation = {
            "joints": np.asarray(self._robot.read_joints(), np.float32),
            "gripper": np.array([self._robot.read_gripper()], np.float32),
            **{
                f"{camera}_rgb": image_tools.resize_with_pad(images[camera], IMAGE_SIZE, IMAGE_SIZE)
                for camera in CAMERAS
            },
        }
        if self._prompt is not None:
            observation["prompt"] = self._prompt
        return observation

    def apply_action(self, action: dict) -> None:
        actions = np.asarray(action["actions"], dtype=np.float64)
        if actions.shape != (7,):
            raise ValueError(f"actions: expected shape (7,) (6 joints + gripper), got {actions.shape}")
        self._robot.command(actions[:6], float(np.clip(actions[6], 0.0, 1.0)))


class RTDEUR5Robot(UR5Robot):
    """A real UR5e over RTDE (`pip install ur_rtde`), a Robotiq 2F gripper through its URCap socket (port 63352)
    and two cameras read with OpenCV (`pip install opencv-python`)."""

    def __init__(
        self,
        robot_ip: str,
        camera_ids: tuple[int, int] = (0, 1),
        control_hz: float = 10.0,
        gripper_port: int = 63352,
    ) -> None:
        import cv2
        import rtde_control
        import rtde_receive

        self._cv2 = cv2
        self._control = rtde_control.RTDEControlInterface(robot_ip)
        self._receive = rtde_receive.RTDEReceiveInterface(robot_ip)
        self._period_s = 1.0 / control_hz
        self._gripper = socket.create_connection((robot_ip, gripper_port), timeout=2.0)
        self._gripper_command("SET ACT 1")
        self._gripper_command("SET GTO 1")
        self._cameras = dict(zip(CAMERAS, (cv2.VideoCapture(i) for i in camera_ids), strict=True))

    def _gripper_command(self, line: str) -> str:
        self._gripper.sendall(f"{line}\n".encode())
        return self._gripper.recv(1024).decode().strip()

    def read_joints(self) -> np.ndarray:
        return np.asarray(self._receive.getActualQ())

    def read_gripper(self) -> float:
        # "POS 123": 0 open … 255 closed.
        return int(self._gripper_command("GET POS").split()[-1]) / 255.0

    def read_images(self) -> dict[str, np.ndarray]:
        frames = {}
        for name, capture in self._cameras.items():
            ok, frame = capture.read()
            if not ok:
                raise RuntimeError(f"camera {name!r}: no frame")
            frames[name] = self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB)
        return frames

    def command(self, joints: np.ndarray, gripper: float) -> None:
        # servoJ(q, speed, acceleration, time, lookahead time, gain): track the target for one control period.
        self._control.servoJ(list(map(float, joints)), 0.0, 0.0, self._period_s, 0.1, 300)
        self._gripper_command(f"SET POS {round(gripper * 255)}")

    def move_to(self, joints: np.ndarray, gripper: float) -> None:
        self._control.servoStop()
        self._control.moveJ(list(map(float, joints)), 0.5, 0.5)
        self._gripper_command(f"SET POS {round(gripper * 255)}")

    def close(self) -> None:
        self._control.servoStop()
        self._control.stopScript()
        self._gripper.close()
        for capture in self._cameras.values():
            capture.release()
