"""The ALOHA client end to end: a fake hardware layer under the real environment, runtime, client and server."""

from __future__ import annotations

import numpy as np
import pytest

from .. import example_modules
from .. import robot_test_policy

robot, env, main = example_modules.load("aloha_real", "robot", "env", "main")
FRAME_SHAPE = (480, 640, 3)


class FakeAlohaHardware(robot.AlohaHardware):
    """Joints that reach every command at once; the finger position follows the gripper joint linearly over the
    calibrated ranges. Cameras show a different gray level each. Every command is recorded."""

    def __init__(self, cameras=robot.CAMERAS) -> None:
        self.arm_joints = np.zeros((2, 6))
        self.gripper_joints = np.zeros(2)
        self.commands: list[tuple[np.ndarray, np.ndarray]] = []
        self.moves: list[tuple[np.ndarray, np.ndarray, float]] = []
        self.cameras = cameras

    def read_arm_joints(self) -> np.ndarray:
        return self.arm_joints.copy()

    def read_gripper_positions(self) -> np.ndarray:
        (joint_low, joint_high), (position_low, position_high) = env.PUPPET_GRIPPER_JOINT, env.PUPPET_GRIPPER_POSITION
        fraction = (self.gripper_joints - joint_low) / (joint_high - joint_low)
        return position_low + fraction * (position_high - position_low)

    def read_images(self) -> dict[str, np.ndarray]:
        return {camera: np.full(FRAME_SHAPE, 40 * (i + 1), np.uint8) for i, camera in enumerate(self.cameras)}

    def command(self, arm_joints: np.ndarray, gripper_joints: np.ndarray) -> None:
        self.commands.append((arm_joints.copy(), gripper_joints.copy()))
        self.arm_joints, self.gripper_joints = arm_joints.copy(), gripper_joints.copy()

    def move_to(self, arm_joints: np.ndarray, gripper_joints: np.ndarray, duration_s: float) -> None:
        self.moves.append((arm_joints.copy(), gripper_joints.copy(), duration_s))
        self.arm_joints, self.gripper_joints = arm_joints.copy(), gripper_joints.copy()


def test_policy_chunks_drive_the_arms_at_the_broker_horizon(serve):
    policy = robot_test_policy.RobotTestPolicy("ALOHA", horizon=10)
    hardware = FakeAlohaHardware()
    args = main.Args(host="127.0.0.1", port=serve(policy), action_horizon=3, max_episode_steps=6, prompt="fold")
    client = main.websocket_client_policy.WebsocketClientPolicy(args.host, args.port)
    main.make_runtime(args, hardware, client).run()
    client.close()

    # Reset to the start pose with open grippers, before the episode and after it.
    assert len(hardware.moves) == 2
    np.testing.assert_allclose(hardware.moves[0][0], np.stack([robot.START_ARM_JOINTS] * 2))
    np.testing.assert_allclose(hardware.moves[0][1], [env.PUPPET_GRIPPER_JOINT[1]] * 2)

    # 6 steps with chunks of 3: the server was asked twice, first from the start pose (grippers open = 1).
    assert len(policy.observations) == 2
    first = policy.observations[0]
    expected_state = np.concatenate([robot.START_ARM_JOINTS, [1.0], robot.START_ARM_JOINTS, [1.0]])
    np.testing.assert_allclose(first["state"], expected_state, atol=1e-6)
    assert first["prompt"] == "fold"
    assert {camera: (image.shape, image.dtype) for camera, image in first["images"].items()} == dict.fromkeys(
        robot.CAMERAS, ((3, 224, 224), np.uint8)
    )
    # 480x640 frames are letterboxed into 224x224: black bars above and below, the camera's gray in the middle.
    assert first["images"]["cam_low"][:, 112, 112].tolist() == [80, 80, 80]
    assert first["images"]["cam_low"][:, 0, 112].tolist() == [0, 0, 0]

    # Each command is one step of the chunk the policy answered for the last observation.
    assert len(hardware.commands) == 6
    for index, (arm_joints, gripper_joints) in enumerate(hardware.commands):
        actions = policy.infer(policy.observations[index // 3])["actions"][index % 3]
        np.testing.assert_allclose(arm_joints, np.stack([actions[0:6], actions[7:13]]), atol=1e-6)
        (low, high) = env.PUPPET_GRIPPER_JOINT
        np.testing.assert_allclose(gripper_joints, actions[[6, 13]] * (high - low) + low, atol=1e-6)


def test_gripper_state_is_normalized_between_closed_and_open():
    hardware = FakeAlohaHardware()
    hardware.gripper_joints = np.array(env.PUPPET_GRIPPER_JOINT)  # left closed, right open
    state = env.AlohaRealEnvironment(hardware).get_observation()["state"]
    np.testing.assert_allclose(state[[6, 13]], [0.0, 1.0], atol=1e-6)
    assert "prompt" not in env.AlohaRealEnvironment(hardware).get_observation()


def test_actions_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match=r"actions: expected shape \(14,\), got \(8,\)"):
        env.AlohaRealEnvironment(FakeAlohaHardware()).apply_action({"actions": np.zeros(8)})


def test_a_missing_camera_is_reported():
    hardware = FakeAlohaHardware(cameras=("cam_high", "cam_left_wrist", "cam_right_wrist"))
    with pytest.raises(ValueError, match=r"images: missing cameras \['cam_low'\]"):
        env.AlohaRealEnvironment(hardware).get_observation()


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_ros_images_with_padded_rows_decode_to_rgb(encoding):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    pixels = rgb[..., ::-1] if encoding == "bgr8" else rgb
    step = 5 * 3 + 1  # one padding byte per row
    data = np.concatenate([pixels.reshape(4, 15), np.full((4, 1), 7, np.uint8)], axis=1).tobytes()
    np.testing.assert_array_equal(robot.ros_image_to_rgb(data, 4, 5, step, encoding), rgb)


def test_other_ros_image_encodings_are_refused():
    with pytest.raises(ValueError, match="image encoding: expected 'rgb8' or 'bgr8', got 'mono8'"):
        robot.ros_image_to_rgb(b"\0" * 4, 2, 2, 2, "mono8")
