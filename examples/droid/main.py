"""Runs a served policy on a DROID robot: joint-velocity control at 15 Hz, action chunks executed open loop."""

from __future__ import annotations

import dataclasses
import logging

import env as _env
import tyro

from openpi_client import action_chunk_broker
from openpi_client import websocket_client_policy
from openpi_client.runtime import runtime as _runtime
from openpi_client.runtime.agents import policy_agent

CONTROL_HZ = 15


@dataclasses.dataclass
class Args:
    """Command line of the DROID client."""

    # ZED camera serial numbers: one exterior camera and the wrist camera.
    exterior_camera_id: str
    wrist_camera_id: str
    # Policy server.
    host: str = "0.0.0.0"
    port: int = 8000
    api_key: str | None = None
    # Steps of each action chunk executed before the policy is asked again.
    open_loop_horizon: int = 8
    # Episodes to run; the operator types each one's instruction.
    num_episodes: int = 1
    # Episode length in control steps (15 per second).
    max_timesteps: int = 600


def make_runtime(
    args: Args, environment: _env.DroidEnvironment, policy: websocket_client_policy.WebsocketClientPolicy
) -> _runtime.Runtime:
    """The control loop: DROID environment, chunked policy agent, at `CONTROL_HZ`."""
    return _runtime.Runtime(
        environment=environment,
        agent=policy_agent.PolicyAgent(action_chunk_broker.ActionChunkBroker(policy, args.open_loop_horizon)),
        subscribers=[],
        max_hz=CONTROL_HZ,
        num_episodes=args.num_episodes,
        max_episode_steps=args.max_timesteps,
    )


def main(args: Args) -> None:
    # The DROID software stack (https://droid-dataset.github.io) exists only on the robot's control computer.
    from droid.robot_env import RobotEnv

    robot_env = RobotEnv(action_space="joint_velocity", gripper_action_space="position")
    environment = _env.DroidEnvironment(robot_env, args.exterior_camera_id, args.wrist_camera_id)
    policy = websocket_client_policy.WebsocketClientPolicy(args.host, args.port, args.api_key)
    logging.info("Server metadata: %s", policy.get_server_metadata())
    try:
        make_runtime(args, environment, policy).run()
    finally:
        policy.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
