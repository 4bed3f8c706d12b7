"""Measures the scripted expert: success rate over seeded episodes, time per episode, and camera rendering speed.

uv run examples/aloha_sim/eval_expert.py --num-episodes 50
"""

from __future__ import annotations

import dataclasses
import time

import env as _env
import expert as _expert
import sim as _sim
import tqdm
import tyro


@dataclasses.dataclass
class Args:
    """Which episodes to run."""

    task: str = "gym_aloha/AlohaTransferCube-v0"
    # Episodes to run, from seeds `seed`, `seed + 1`, ...
    num_episodes: int = 50
    seed: int = 0
    # Camera size (height, width) for the rendering measurement.
    resolution: tuple[int, int] = _env.DEFAULT_RESOLUTION
    # Frames rendered for the rendering measurement.
    render_frames: int = 50


@dataclasses.dataclass(frozen=True)
class ExpertReport:
    """What `evaluate` measured."""

    successes: list[bool]
    episode_steps: list[int]
    seconds_per_episode: float  # physics + planning, no rendering
    render_ms_per_frame: float

    @property
    def success_rate(self) -> float:
        return sum(self.successes) / len(self.successes)


def run_expert_episode(simulation: _sim.AlohaSim, seed: int) -> tuple[bool, int, int]:
    """Replays the expert's plan from `seed` until success; returns (succeeded, steps taken, highest task reward)."""
    simulation.reset(seed)
    actions = _expert.plan(simulation)
    max_reward = 0
    for step, action in enumerate(actions):
        max_reward = max(max_reward, simulation.step(action))
        if simulation.is_success:
            return True, step + 1, max_reward
    return False, len(actions), max_reward


def expert_episodes(task: str, first_seed: int, num_episodes: int) -> list[tuple[bool, int, int]]:
    """`run_expert_episode` on seeds `first_seed .. first_seed + num_episodes - 1`, in one scene."""
    simulation = _sim.AlohaSim(task)
    return [run_expert_episode(simulation, first_seed + i) for i in range(num_episodes)]


def evaluate(args: Args) -> ExpertReport:
    """Runs the expert on seeds `seed .. seed + num_episodes - 1` and times rendering of the top camera."""
    simulation = _sim.AlohaSim(args.task)
    successes, steps = [], []
    start = time.perf_counter()
    for seed in tqdm.trange(args.seed, args.seed + args.num_episodes, desc="Expert episodes"):
        succeeded, length, _ = run_expert_episode(simulation, seed)
        successes.append(succeeded)
        steps.append(length)
    seconds_per_episode = (time.perf_counter() - start) / args.num_episodes
    simulation.render("top", *args.resolution)  # creates the OpenGL context
    start = time.perf_counter()
    for _ in range(args.render_frames):
        simulation.render("top", *args.resolution)
    render_ms = (time.perf_counter() - start) / args.render_frames * 1000
    return ExpertReport(successes, steps, seconds_per_episode, render_ms)


def main(args: Args) -> ExpertReport:
    report = evaluate(args)
    failed = [args.seed + i for i, ok in enumerate(report.successes) if not ok]
    print(
        f"Expert success rate on {args.task}: {report.success_rate:.0%} ({sum(report.successes)}/{args.num_episodes})"
    )
    print(f"Failed seeds: {failed or 'none'}")
    print(f"Steps to success: mean {sum(report.episode_steps) / len(report.episode_steps):.0f} (at {_sim.FPS} Hz)")
    print(f"Time per episode without rendering: {report.seconds_per_episode:.2f} s")
    height, width = args.resolution
    print(f"Rendering the top camera at {height}x{width}: {report.render_ms_per_frame:.1f} ms per frame")
    return report


if __name__ == "__main__":
    main(tyro.cli(Args))
