"""The UR5 guide end to end on generated data: norm stats, a few `ur5` train steps (tiny model), the checkpoint
served over a real websocket and driven by the example's client (`examples/ur5`) on a stand-in robot."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from openpi.lerobot import lerobot_dataset
from openpi.policies import policy_config
from openpi.training import config as _config
from openpi.training import data_loader
from openpi.training import trainer
from openpi.training import weight_loaders
from training import train_helpers

from .. import example_modules

env, main = example_modules.load("ur5", "env", "main")
REPO_ID = "test/my_ur5_dataset"


def _write_ur5_dataset(num_episodes: int = 3, length: int = 12, image_size: int = 32) -> None:
    """A small LeRobot dataset with the guide's keys: the arm drifts towards a target, the gripper closes."""
    image = {"dtype": "image", "shape": (image_size, image_size, 3), "names": ["height", "width", "channel"]}
    features = {
        "joints": {"dtype": "float32", "shape": (6,), "names": None},
        "gripper": {"dtype": "float32", "shape": (1,), "names": None},
        "base_rgb": image,
        "wrist_rgb": image,
        "actions": {"dtype": "float32", "shape": (7,), "names": None},
    }
    dataset = lerobot_dataset.LeRobotDataset.create(REPO_ID, fps=10, features=features, robot_type="ur5")
    rng = np.random.default_rng(0)
    for _ in range(num_episodes):
        joints = env.HOME_JOINTS + rng.normal(0, 0.1, 6)
        target = joints + rng.normal(0, 0.3, 6)
        for t in range(length):
            gripper = np.float32(t / (length - 1))
            next_joints = joints + 0.2 * (target - joints)
            frame = {
                "joints": joints.astype(np.float32),
                "gripper": np.array([gripper], np.float32),
                "base_rgb": np.full((image_size, image_size, 3), 20 * t, np.uint8),
                "wrist_rgb": np.full((image_size, image_size, 3), 255 - 20 * t, np.uint8),
                "actions": np.append(next_joints, min(1.0, gripper + 0.1)).astype(np.float32),
                "task": "pick up the cube",
            }
            dataset.add_frame(frame)
            joints = next_joints
        dataset.save_episode()
    dataset.finalize()


class StandInUR5(env.UR5Robot):
    """Joints and gripper that reach every target at once; cameras show fixed gray levels; commands recorded."""

    def __init__(self) -> None:
        self.joints = np.zeros(6)
        self.gripper = 0.0
        self.commands: list[tuple[np.ndarray, float]] = []
        self.moves: list[tuple[np.ndarray, float]] = []

    def read_joints(self) -> np.ndarray:
        return self.joints.copy()

    def read_gripper(self) -> float:
        return self.gripper

    def read_images(self) -> dict[str, np.ndarray]:
        return {"base": np.full((480, 640, 3), 60, np.uint8), "wrist": np.full((480, 640, 3), 180, np.uint8)}

    def command(self, joints: np.ndarray, gripper: float) -> None:
        self.commands.append((joints.copy(), gripper))
        self.joints, self.gripper = joints.copy(), gripper

    def move_to(self, joints: np.ndarray, gripper: float) -> None:
        self.moves.append((joints.copy(), gripper))
        self.joints, self.gripper = joints.copy(), gripper


@pytest.fixture
def ur5_config(tmp_path, monkeypatch) -> _config.TrainConfig:
    """The registered `ur5` config with the tiny debug model, no base weights and the offline tokenizer."""
    train_helpers.isolate(monkeypatch, tmp_path)
    _write_ur5_dataset()
    registered = _config.get_config("ur5")
    return dataclasses.replace(
        registered,
        exp_name="my_ur5",
        model=_config.DEBUG_MODEL,
        weight_loader=weight_loaders.NoOpWeightLoader(),
        data=dataclasses.replace(
            registered.data, repo_id=REPO_ID, tokenizer="debug", base_config=_config.DataConfig(prompt_from_task=True)
        ),
        batch_size=8,
        num_train_steps=3,
        log_interval=1,
        num_workers=0,
        wandb_enabled=False,
        checkpoint_base_dir=str(tmp_path / "checkpoints"),
        assets_base_dir=str(tmp_path / "assets"),
    )


@pytest.mark.slow
def test_ur5_guide_trains_serves_and_drives_the_robot(ur5_config, serve):
    # Guide step 3: norm stats, then training.
    stats_path = data_loader.compute_norm_stats(ur5_config, progress=False)
    assert stats_path == ur5_config.assets_dirs / REPO_ID / "norm_stats.json"
    state = trainer.train(ur5_config)
    assert int(state.step) == 3
    checkpoint = ur5_config.checkpoint_dir / "2"
    assert (checkpoint / "assets" / REPO_ID / "norm_stats.json").is_file()

    # Step 4: serve the checkpoint and run the robot client against it.
    policy = policy_config.create_trained_policy(ur5_config, checkpoint)
    port = serve(policy)
    robot = StandInUR5()
    args = main.Args(host="127.0.0.1", port=port, action_horizon=2, max_episode_steps=4, prompt="pick up the cube")
    client = main.websocket_client_policy.WebsocketClientPolicy(args.host, args.port)
    try:
        chunk = client.infer(env.UR5Environment(robot, prompt=args.prompt).get_observation())["actions"]
        main.make_runtime(args, robot, client).run()
    finally:
        client.close()

    # One chunk per request: the tiny model's horizon, 6 joints + gripper, absolute joint targets.
    assert chunk.shape == (_config.DEBUG_MODEL.action_horizon, 7)
    assert np.all(np.isfinite(chunk))
    # Reset to the home pose before the episode and after it; 4 steps executed in between.
    assert len(robot.moves) == 2
    np.testing.assert_allclose(robot.moves[0][0], env.HOME_JOINTS)
    assert len(robot.commands) == 4
    for joints, gripper in robot.commands:
        assert joints.shape == (6,)
        assert np.all(np.isfinite(joints))
        assert 0.0 <= gripper <= 1.0


def test_ur5_environment_refuses_malformed_actions_and_missing_cameras():
    robot = StandInUR5()
    environment = env.UR5Environment(robot)
    with pytest.raises(ValueError, match=r"actions: expected shape \(7,\)"):
        environment.apply_action({"actions": np.zeros(6)})

    class OneCamera(StandInUR5):
        def read_images(self) -> dict[str, np.ndarray]:
            return {"base": np.zeros((8, 8, 3), np.uint8)}

    with pytest.raises(ValueError, match=r"missing cameras \['wrist'\]"):
        env.UR5Environment(OneCamera()).get_observation()
    observation = environment.get_observation()
    assert observation["base_rgb"].shape == observation["wrist_rgb"].shape == (224, 224, 3)
    assert observation["joints"].shape == (6,)
    assert observation["gripper"].shape == (1,)
