"""Runs a served `ur5` policy on a UR5e at 10 Hz, executing each action chunk open loop for a few steps.

uv run examples/ur5/main.py --robot-ip 192.168.1.10 --prompt "pick up the cube"
"""

from __future__ import annotations

import dataclasses
import logging

import env as _env
import tyro

from openpi_client import websocket_client_policy
from openpi_client.runtime import runtime as _runtime

CONTROL_HZ = 10


@dataclasses.dataclass
class Args:
    """Command line of the UR5 client."""

    # Policy server.
    host: str = "0.0.0.0"
    port: int = 8000
    api_key: str | None = None
    # Robot controller address and camera device ids (base, wrist).
    robot_ip: str = "192.168.1.10"
    camera_ids: tuple[int, int] = (0, 1)
    # Steps of each action chunk executed before the policy is asked again.
    action_horizon: int = 10
    num_episodes: int = 1
    # Episode length in control steps.
    max_episode_steps: int = 300
    # Task instruction sent with every observation; without it the server's default prompt is used.
    prompt: str | None = None


def make_runtime(
    args: Args, robot: _env.UR5Robot, policy: websocket_client_policy.WebsocketClientPolicy
) -> _runtime.Runtime:
    """The control loop: UR5 environment, chunked policy agent, at `CONTROL_HZ`."""
    return _runtime.chunked_policy_runtime(
        _env.UR5Environment(robot, prompt=args.prompt),
        policy,
        action_horizon=args.action_horizon,
        max_hz=CONTROL_HZ,
        num_episodes=args.num_episodes,
        max_episode_steps=args.max_episode_steps,
    )


def main(args: Args) -> None:
    with websocket_client_policy.WebsocketClientPolicy(args.host, args.port, args.api_key) as policy:
        logging.info("Server metadata: %s", policy.get_server_metadata())
        robot = _env.RTDEUR5Robot(args.robot_ip, args.camera_ids, control_hz=CONTROL_HZ)
        try:
            make_runtime(args, robot, policy).run()
        finally:
            robot.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
