"""Closed-loop evaluation in the ALOHA sim: a policy server drives the arms; one mp4 per episode, success rate printed.

uv run scripts/serve_policy.py --env ALOHA_SIM ...      # terminal 1
uv run examples/aloha_sim/main.py --num-episodes 10     # terminal 2
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

import env as _env
import saver as _saver
import tqdm
import tyro

from openpi_client import action_chunk_broker
from openpi_client import base_policy as _base_policy
from openpi_client import websocket_client_policy as _websocket_client_policy
from openpi_client.runtime import runtime as _runtime
from openpi_client.runtime import subscriber as _subscriber
from openpi_client.runtime.agents import policy_agent as _policy_agent

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Args:
    """Where the policy server is, which episodes to run and where the videos go."""

    host: str = "0.0.0.0"
    port: int = 8000
    api_key: str | None = None

    # gym-aloha task id: gym_aloha/AlohaTransferCube-v0 or gym_aloha/AlohaInsertion-v0.
    task: str = "gym_aloha/AlohaTransferCube-v0"
    # Episodes to run.
    num_episodes: int = 10
    # Episode i starts from seed `seed + i` (generate_data.py uses seeds from 0, so these are unseen).
    seed: int = 100_000
    # An episode that has not succeeded after this many steps (50 per second) is a failure.
    max_steps: int = 400
    # Steps executed from each action chunk before the policy is asked again.
    action_horizon: int = 10
    # Rendered camera size (height, width); match the training data.
    resolution: tuple[int, int] = _env.DEFAULT_RESOLUTION
    # Also send the wrist cameras (cam_left_wrist, cam_right_wrist).
    wrist_cameras: bool = False
    # Render with shadows, as gym-aloha does (about 8x slower on a CPU).
    shadows: bool = False

    out_dir: pathlib.Path = pathlib.Path("data/aloha_sim/videos")


class _EpisodeResults(_subscriber.Subscriber):
    """Records whether each episode succeeded, as the environment reports it at the episode's end; shows progress."""

    def __init__(self, environment: _env.AlohaSimEnvironment, progress: tqdm.tqdm) -> None:
        self._environment = environment
        self._progress = progress
        self.successes: list[bool] = []
        self.lengths: list[int] = []

    def on_episode_start(self) -> None:
        self.lengths.append(0)

    def on_step(self, observation: dict, action: dict) -> None:
        self.lengths[-1] += 1
        if self.lengths[-1] % 50 == 0:
            self._progress.set_postfix(successes=sum(self.successes), step=self.lengths[-1])

    def on_episode_end(self) -> None:
        self.successes.append(self._environment.episode_succeeded)
        self._progress.set_postfix(successes=sum(self.successes))
        self._progress.update()
        logger.info(
            "Episode %d: %s after %d steps, highest reward %d (success rate so far %d/%d)",
            len(self.successes) - 1,
            "success" if self.successes[-1] else "failure",
            self.lengths[-1],
            self._environment.episode_max_reward,
            sum(self.successes),
            len(self.successes),
        )


def run_episodes(policy: _base_policy.BasePolicy, args: Args) -> list[bool]:
    """Runs `args.num_episodes` episodes with `policy` (whose outputs are action chunks); returns each one's success."""
    environment = _env.AlohaSimEnvironment(
        task=args.task,
        seed=args.seed,
        max_steps=args.max_steps,
        cameras=("top", "left_wrist", "right_wrist") if args.wrist_cameras else ("top",),
        resolution=args.resolution,
        shadows=args.shadows,
    )
    with tqdm.tqdm(total=args.num_episodes, desc="Episodes", unit="episode") as progress:
        results = _EpisodeResults(environment, progress)
        runtime = _runtime.Runtime(
            environment=environment,
            agent=_policy_agent.PolicyAgent(
                policy=action_chunk_broker.ActionChunkBroker(policy=policy, action_horizon=args.action_horizon)
            ),
            subscribers=[_saver.VideoSaver(args.out_dir), results],
            num_episodes=args.num_episodes,
        )
        runtime.run()
    return results.successes


def main(args: Args) -> float:
    """Connects to the server, runs the episodes and prints (and returns) the success rate."""
    with _websocket_client_policy.WebsocketClientPolicy(args.host, args.port, api_key=args.api_key) as policy:
        successes = run_episodes(policy, args)
    rate = sum(successes) / len(successes)
    print(
        f"Success rate: {rate:.0%} ({sum(successes)}/{len(successes)} episodes of {args.task}); videos in {args.out_dir}"
    )
    return rate


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
