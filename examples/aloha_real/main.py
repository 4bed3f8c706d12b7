"""Runs a served policy on the real ALOHA at 50 Hz, executing each action chunk open loop for a while."""

from __future__ import annotations

import dataclasses
import logging

import env as _env
import robot as _robot
import tyro

from openpi_client import websocket_client_policy
from openpi_client.runtime import runtime as _runtime

CONTROL_HZ = 50


@dataclasses.dataclass
class Args:
    """Command line of the ALOHA client."""

    # Policy server.
    host: str = "0.0.0.0"
    port: int = 8000
    api_key: str | None = None
    # Steps of each action chunk executed before the policy is asked again (pi0 predicts 50).
    action_horizon: int = 25
    num_episodes: int = 1
    # Episode length in control steps (50 per second).
    max_episode_steps: int = 1000
    # Task instruction sent with every observation; without it the server's default prompt is used.
    prompt: str | None = None


def make_runtime(
    args: Args, hardware: _robot.AlohaHardware, policy: websocket_client_policy.WebsocketClientPolicy
) -> _runtime.Runtime:
    """The control loop: ALOHA environment, chunked policy agent, at `CONTROL_HZ`."""
    return _runtime.chunked_policy_runtime(
        _env.AlohaRealEnvironment(hardware, prompt=args.prompt),
        policy,
        action_horizon=args.action_horizon,
        max_hz=CONTROL_HZ,
        num_episodes=args.num_episodes,
        max_episode_steps=args.max_episode_steps,
    )


def main(args: Args) -> None:
    with websocket_client_policy.WebsocketClientPolicy(args.host, args.port, args.api_key) as policy:
        logging.info("Server metadata: %s", policy.get_server_metadata())
        make_runtime(args, _robot.InterbotixAlohaHardware(), policy).run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
