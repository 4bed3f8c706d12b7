"""Closed-loop evaluation in the ALOHA sim: a policy server drives the arms; one captioned mp4 per episode (rendered
for viewing at --video-resolution), success rate printed.

uv run scripts/serve_policy.py --env ALOHA_SIM ...      # terminal 1
uv run examples/aloha_sim/main.py --num-episodes 10     # terminal 2
"""

from __future__ import annotations

from collections.abc import Sequence
import concurrent.futures
import dataclasses
import logging
import multiprocessing
import pathlib
import queue

import env as _env
import numpy as np
import saver as _saver
import tqdm
import tyro

from openpi_client import base_policy as _base_policy
from openpi_client import websocket_client_policy as _websocket_client_policy
from openpi_client.runtime import runtime as _runtime
from openpi_client.runtime import subscriber as _subscriber

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Args:
    """Where the policy server is, which episodes to run and where the videos go."""

    host: str = "0.0.0.0"
    port: int = 8000
    # Several servers (of the same policy) in place of --port: worker w talks to ports[w % len(ports)]. With one
    # server per worker, each worker's requests reach its server in the same order every run, so the sampling noise
    # every episode gets, and the outcome, no longer depend on timing.
    ports: tuple[int, ...] = ()
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
    # Episodes run at the same time, each client process with its own connection (a shared server batches requests).
    num_workers: int = 1
    # Size (height, width) of the videos: the top camera rendered for viewing, apart from the policy's input.
    video_resolution: tuple[int, int] = (240, 320)
    # Film every this many steps (the videos play at 50 / stride frames per second).
    video_stride: int = 2

    out_dir: pathlib.Path = pathlib.Path("data/aloha_sim/videos")


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
    """How one closed-loop episode went."""

    seed: int
    success: bool
    steps: int  # actions applied (the episode ends on success or after max_steps)
    max_reward: int  # highest task reward reached (transfer cube: 1 touched, 2 lifted, 3 both grippers, 4 success)
    video: str  # the filmed episode (mp4)
    last_frame: np.ndarray = dataclasses.field(repr=False, compare=False)  # the video's marked last frame (HWC)

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "success": self.success,
            "steps": self.steps,
            "max_reward": self.max_reward,
            "video": self.video,
        }


class _EpisodeLog(_subscriber.Subscriber):
    """Collects each episode's outcome as the environment reports it at the episode's end; reports it to `report`."""

    def __init__(self, environment: _env.AlohaSimEnvironment, film: _saver.EpisodeFilm, report) -> None:
        self._environment = environment
        self._film = film
        self._report = report
        self.results: list[EpisodeResult] = []

    def on_episode_start(self) -> None:
        pass

    def on_step(self, observation: dict, action: dict) -> None:
        pass

    def on_episode_end(self) -> None:
        environment = self._environment
        result = EpisodeResult(
            seed=environment.episode_seed,
            success=environment.episode_succeeded,
            steps=environment.episode_steps,
            max_reward=environment.episode_max_reward,
            video=str(self._film.paths[-1]),
            last_frame=self._film.last_frames[-1],
        )
        self.results.append(result)
        logger.info(
            "Seed %d: %s after %d steps, highest reward %d",
            result.seed,
            "success" if result.success else "failure",
            result.steps,
            result.max_reward,
        )
        self._report(result)


def run_episodes(
    policy: _base_policy.BasePolicy, args: Args, episodes: Sequence[int] | None = None, report=None
) -> list[EpisodeResult]:
    """Runs episodes `episodes` (default: all `args.num_episodes`; episode `i` starts from seed `args.seed + i` and is
    filmed as `episode_<i>.mp4`) with `policy` (whose outputs are action chunks); `report(result)` after each."""
    episodes = list(range(args.num_episodes) if episodes is None else episodes)
    environment = _env.AlohaSimEnvironment(
        task=args.task,
        max_steps=args.max_steps,
        cameras=("top", "left_wrist", "right_wrist") if args.wrist_cameras else ("top",),
        resolution=args.resolution,
        shadows=args.shadows,
        seeds=[args.seed + i for i in episodes],
        # The broker below sends the policy the observation of every action_horizon-th step only.
        render_every=args.action_horizon,
    )
    film = _saver.EpisodeFilm(
        environment, args.out_dir, args.video_resolution, args.video_stride, names=[f"{i:03d}" for i in episodes]
    )
    log = _EpisodeLog(environment, film, report or (lambda result: None))
    runtime = _runtime.chunked_policy_runtime(
        environment, policy, action_horizon=args.action_horizon, num_episodes=len(episodes), subscribers=[film, log]
    )
    runtime.run()
    return log.results


class _Progress:
    """A progress bar of finished episodes and their successes."""

    def __init__(self, total: int) -> None:
        self._bar = tqdm.tqdm(total=total, desc="Episodes", unit="episode")
        self._successes = 0

    def episode_done(self, success: bool) -> None:
        self._successes += success
        self._bar.update()
        self._bar.set_postfix(successes=f"{self._successes}/{self._bar.n}")

    def close(self) -> None:
        self._bar.close()


_worker_outcomes: multiprocessing.Queue | None = None


def _start_worker(outcomes: multiprocessing.Queue, log_level: int) -> None:
    global _worker_outcomes
    _worker_outcomes = outcomes
    logging.basicConfig(level=log_level, force=True)  # a spawned process starts without the caller's logging


def _run_in_worker(args: Args, episodes: list[int], port: int) -> list[EpisodeResult]:
    assert _worker_outcomes is not None, "worker not started"
    with _websocket_client_policy.WebsocketClientPolicy(args.host, port, api_key=args.api_key) as policy:
        return run_episodes(policy, args, episodes, report=lambda result: _worker_outcomes.put(result.success))


def evaluate(args: Args) -> list[EpisodeResult]:
    """All `args.num_episodes` episodes against the policy server(s), `args.num_workers` at a time (each worker a
    process with its own connection and scene; a server shared by workers batches their requests); results in seed
    order."""
    if args.num_workers < 1:
        raise ValueError(f"num_workers: expected >= 1, got {args.num_workers}")
    num_workers = min(args.num_workers, args.num_episodes)
    ports = args.ports or (args.port,)
    progress = _Progress(args.num_episodes)
    try:
        if num_workers == 1:
            with _websocket_client_policy.WebsocketClientPolicy(args.host, ports[0], api_key=args.api_key) as policy:
                return run_episodes(policy, args, report=lambda result: progress.episode_done(result.success))
        # Spawned, not forked: the caller may run JAX or rendering threads, which a fork would copy mid-flight.
        context = multiprocessing.get_context("spawn")
        outcomes = context.Queue()
        # Worker w runs episodes w, w + n, w + 2n, ...: each gets a similar mix of early and late seeds.
        shares = [list(range(w, args.num_episodes, num_workers)) for w in range(num_workers)]
        with concurrent.futures.ProcessPoolExecutor(
            num_workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(outcomes, logging.getLogger().getEffectiveLevel()),
        ) as pool:
            futures = [
                pool.submit(_run_in_worker, args, share, ports[w % len(ports)]) for w, share in enumerate(shares)
            ]
            reported = 0
            while reported < args.num_episodes:
                try:
                    success = outcomes.get(timeout=1.0)
                except queue.Empty:
                    for future in futures:
                        if future.done():
                            future.result()  # raises a worker's error instead of waiting for its episodes forever
                    continue
                progress.episode_done(success)
                reported += 1
            results = [result for future in futures for result in future.result()]
        return sorted(results, key=lambda result: result.seed)
    finally:
        progress.close()


def main(args: Args) -> float:
    """Connects to the server, runs the episodes and prints (and returns) the success rate."""
    successes = [result.success for result in evaluate(args)]
    rate = sum(successes) / len(successes)
    print(
        f"Success rate: {rate:.0%} ({sum(successes)}/{len(successes)} episodes of {args.task}); videos in {args.out_dir}"
    )
    return rate


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
