"""Benchmark: real-time execution in the ALOHA sim (transfer cube) under an injected inference delay.

    uv run bench/bench_realtime.py --checkpoint DIR [--rtc-checkpoint DIR] [--delays 0 5 10] [--num-episodes 20]

Four ways to run a chunking policy while each request takes `d` control steps (50 Hz: 5 steps = 100 ms) to answer:

- ``sync``: the robot holds its last commanded action for `d` steps while it waits, then executes the new chunk
  from its first action (episodes take longer).
- ``naive``: the current chunk keeps executing; the new one takes over at its action `d` (its first `d` belong to
  steps that have passed).
- ``rtc_guided``: as naive, and the request carries the pending actions and `d`; the demo's pi0 continues them
  with guided sampling (inference-time RTC).
- ``rtc_trained``: the same requests to the demo's pi0 fine-tuned with training-time RTC (`pi0_aloha_sim_demo_rtc`,
  `--rtc-checkpoint`), which conditions on the pending actions as a clean prefix.

The delay is simulated in control steps, so the figures do not depend on this machine's speed: a request made at
step t (observation o_t) is answered at once, but its chunk is handed to the control loop only at step t + d. The
asynchronous modes can take a chunk over one step after its request at the earliest, so they run d = 0 as d = 1. The
control loop is `openpi_client.action_chunk_runner.ActionChunkRunner` (the three client modes; `d` given as
`inference_delay_steps`), the policy the in-process `Policy` of each checkpoint. The first chunk of an episode is
computed before its first step in every mode. Camera images are rendered only on the steps that send a request.

Measured per (mode, delay) on the same seeds: success rate, episode duration (steps, successful episodes and all),
the highest task reward reached, and the action jump ||a_t - a_{t-1}|| (Euclidean, over the 14 joint and gripper
actions) where a new chunk takes over against the same within a chunk (held steps of sync mode excluded).
Writes `results.json` and `realtime.png` under `--out-dir` and prints a table.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import json
import logging
import os
import pathlib
import sys
import threading
import time

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt
import numpy as np
import tyro

from openpi.policies import policy_config
from openpi.shared import fileio
from openpi.training import config as _config
from openpi_client import action_chunk_runner
from openpi_client import base_policy

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "aloha_sim"))
import env as _aloha_env  # noqa: E402
import report as _aloha_report  # noqa: E402

logger = logging.getLogger(__name__)

TASK = "gym_aloha/AlohaTransferCube-v0"
MODES = ("sync", "naive", "rtc_guided", "rtc_trained")
# The ActionChunkRunner mode of each benchmark mode.
RUNNER_MODES = {"sync": "sync", "naive": "naive", "rtc_guided": "rtc", "rtc_trained": "rtc"}
CONTROL_HZ = 50
RELEASE_TIMEOUT_S = 120.0


@dataclasses.dataclass
class Args:
    """The checkpoints, the sweep and where the results go."""

    # The demo's pi0 checkpoint (`pi0_aloha_sim_demo`, a step directory with params/ and assets/).
    checkpoint: pathlib.Path
    # The same fine-tuned with training-time RTC (`pi0_aloha_sim_demo_rtc`); None leaves rtc_trained out.
    rtc_checkpoint: pathlib.Path | None = None
    config: str = "pi0_aloha_sim_demo"
    rtc_config: str = "pi0_aloha_sim_demo_rtc"
    modes: tuple[str, ...] = MODES
    # Inference delays in control steps (50 Hz).
    delays: tuple[int, ...] = (0, 5, 10)
    # Episodes per (mode, delay); episode i starts from seed `seed + i` in every one.
    num_episodes: int = 20
    seed: int = 100_000
    # Actions executed from each chunk before the next is requested (the demo's action horizon).
    execute_steps: int = 10
    max_steps: int = 400
    # Camera size (height, width) of the demo's data.
    resolution: tuple[int, int] = _aloha_env.DEFAULT_RESOLUTION
    # Denoising steps per chunk.
    num_steps: int = 10
    out_dir: pathlib.Path = pathlib.Path("data/bench_realtime")


class DelayedPolicy(base_policy.BasePolicy):
    """`policy` behind an inference delay counted in control steps: a request is answered at once, but (while
    `delayed`) the answer is handed back only when the control loop calls `release()`, at the step it becomes
    available. A request without images (one the loop did not render for) is refused."""

    def __init__(self, policy: base_policy.BasePolicy) -> None:
        self._policy = policy
        self._released = threading.Event()
        self.delayed = False
        self.requests = 0

    def infer(self, obs: dict) -> dict:
        if "images" not in obs:
            raise RuntimeError("a chunk was requested at a step without a rendered observation")
        self.requests += 1
        result = self._policy.infer(obs)
        if self.delayed:
            if not self._released.wait(RELEASE_TIMEOUT_S):
                raise TimeoutError(f"the control loop did not take the chunk within {RELEASE_TIMEOUT_S:.0f} s")
            self._released.clear()
        return result

    def release(self) -> None:
        self._released.set()

    def reset(self) -> None:
        self._policy.reset()


@dataclasses.dataclass(frozen=True)
class Episode:
    """How one episode went."""

    seed: int
    success: bool
    steps: int  # control steps, held steps included
    max_reward: int
    chunks: int
    held_steps: int
    boundary_jumps: list[float] = dataclasses.field(repr=False)
    within_jumps: list[float] = dataclasses.field(repr=False)


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + RELEASE_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the released chunk never arrived")
        time.sleep(0.0002)


def run_episode(
    policy: base_policy.BasePolicy,
    environment: _aloha_env.AlohaSimEnvironment,
    mode: str,
    delay: int,
    execute_steps: int,
) -> Episode:
    """One episode (the environment's next seed) with `policy` in `mode` (one of `MODES`) under a `delay` of control
    steps."""
    if mode not in RUNNER_MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if delay < 0:
        raise ValueError(f"delay: expected >= 0 control steps, got {delay}")
    synchronous = mode == "sync"
    link_delay = delay if synchronous else max(1, delay)
    link = DelayedPolicy(policy)
    runner = action_chunk_runner.ActionChunkRunner(
        link,
        execute_steps=execute_steps,
        mode=RUNNER_MODES[mode],
        inference_delay_steps=None if synchronous else link_delay,
    )
    environment.reset()
    boundary_jumps: list[float] = []
    within_jumps: list[float] = []
    held_steps = 0
    previous: np.ndarray | None = None
    pending_step: int | None = None  # the step of the request in flight (asynchronous modes)
    step = 0  # control steps of the runner (held steps not counted)
    try:
        while not environment.is_episode_complete():
            chunk_start = runner.switches[-1].request_step if runner.switches else 0
            if pending_step is not None and step >= pending_step + link_delay:
                link.release()
                _wait_until(lambda: not runner.request_in_flight)
                chunk_start, pending_step = pending_step, None
            # The runner requests on the first step and once execute_steps actions of the current chunk have run.
            requests = not runner.switches or (pending_step is None and step - chunk_start >= execute_steps)
            switches = len(runner.switches)
            action = runner.infer(environment.get_observation() if requests else {})["actions"]
            link.delayed = not synchronous
            switched = len(runner.switches) > switches
            if synchronous and switched and previous is not None:
                for _ in range(delay):  # waiting for the chunk: hold the last command
                    if environment.is_episode_complete():
                        break
                    environment.apply_action({"actions": previous})
                    held_steps += 1
                if environment.is_episode_complete():
                    break
            if pending_step is None and runner.request_in_flight:
                pending_step = step
            if previous is not None:
                jump = float(np.linalg.norm(action - previous))
                (boundary_jumps if switched else within_jumps).append(jump)
            if (
                switched
                and previous is not None
                and runner.switches[-1].delay_steps != (0 if synchronous else link_delay)
            ):
                raise RuntimeError(f"a chunk took over {runner.switches[-1].delay_steps} steps after its request")
            environment.apply_action({"actions": action})
            previous = action
            step += 1
    finally:
        link.delayed = False
        link.release()
        runner.close()
    return Episode(
        seed=environment.episode_seed,
        success=environment.episode_succeeded,
        steps=environment.episode_steps,
        max_reward=environment.episode_max_reward,
        chunks=len(runner.switches),
        held_steps=held_steps,
        boundary_jumps=boundary_jumps,
        within_jumps=within_jumps,
    )


def summarize(episodes: list[Episode]) -> dict:
    """Success, duration, progress and action jumps of one (mode, delay)'s episodes."""
    successes = [episode.success for episode in episodes]
    low, high = _aloha_report.wilson_interval(sum(successes), len(successes))
    succeeded = [episode.steps for episode in episodes if episode.success]
    boundary = [jump for episode in episodes for jump in episode.boundary_jumps]
    within = [jump for episode in episodes for jump in episode.within_jumps]
    return {
        "episodes": len(episodes),
        "successes": sum(successes),
        "success_rate": sum(successes) / len(episodes),
        "success_wilson_95": [round(low, 4), round(high, 4)],
        "mean_steps": float(np.mean([episode.steps for episode in episodes])),
        "mean_steps_successful": float(np.mean(succeeded)) if succeeded else None,
        "mean_max_reward": float(np.mean([episode.max_reward for episode in episodes])),
        "mean_chunks": float(np.mean([episode.chunks for episode in episodes])),
        "mean_held_steps": float(np.mean([episode.held_steps for episode in episodes])),
        "boundary_jump_mean": float(np.mean(boundary)) if boundary else None,
        "boundary_jump_max": float(np.max(boundary)) if boundary else None,
        "within_jump_mean": float(np.mean(within)) if within else None,
        "within_jump_max": float(np.max(within)) if within else None,
    }


def _episode_json(episode: Episode) -> dict:
    """The episode's record with its jumps summed up (count, mean, max) instead of listed."""
    record = {
        key: value
        for key, value in dataclasses.asdict(episode).items()
        if key not in ("boundary_jumps", "within_jumps")
    }
    for name, jumps in (("boundary", episode.boundary_jumps), ("within", episode.within_jumps)):
        record[f"{name}_jumps"] = {
            "count": len(jumps),
            "mean": round(float(np.mean(jumps)), 5) if jumps else None,
            "max": round(float(np.max(jumps)), 5) if jumps else None,
        }
    return record


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[dict]) -> str:
    """A markdown table of the summaries (one row per mode and delay)."""
    lines = [
        "| mode | delay (steps / ms) | success | mean steps (successful / all) | mean max reward | boundary jump "
        "mean / max | within-chunk jump mean / max |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results:
        s = row["summary"]
        lines.append(
            f"| {row['mode']} | {row['delay']} / {row['delay'] * 1000 // CONTROL_HZ} | "
            f"{s['successes']}/{s['episodes']} ({s['success_rate']:.0%}) | "
            f"{_cell(s['mean_steps_successful'], 0)} / {s['mean_steps']:.0f} | {s['mean_max_reward']:.2f} | "
            f"{_cell(s['boundary_jump_mean'])} / {_cell(s['boundary_jump_max'])} | "
            f"{_cell(s['within_jump_mean'])} / {_cell(s['within_jump_max'])} |"
        )
    return "\n".join(lines)


def plot(results: list[dict], path: pathlib.Path, title: str) -> pathlib.Path:
    """Success rate and mean episode duration against the delay (one line per mode) and the mean action jump where
    a chunk takes over (bars; within a chunk: black ticks)."""
    modes = list(dict.fromkeys(row["mode"] for row in results))
    delays = sorted({row["delay"] for row in results})
    by_key = {(row["mode"], row["delay"]): row["summary"] for row in results}
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for mode in modes:
        points = [(delay * 1000 / CONTROL_HZ, by_key[mode, delay]) for delay in delays if (mode, delay) in by_key]
        ms = [x for x, _ in points]
        (line,) = axes[0].plot(ms, [s["success_rate"] for _, s in points], marker="o", label=mode)
        color = line.get_color()
        axes[1].plot(ms, [s["mean_steps"] for _, s in points], marker="o", color=color, label=f"{mode} (all)")
        successful = [(x, s["mean_steps_successful"]) for x, s in points if s["mean_steps_successful"] is not None]
        if successful:
            xs, ys = zip(*successful, strict=True)
            axes[1].plot(xs, ys, marker="x", linestyle=":", color=color, label=f"{mode} (successful)")
    axes[0].set(xlabel="inference delay (ms)", ylabel="success rate", title="Success", ylim=(-0.02, 1.02))
    axes[1].set(xlabel="inference delay (ms)", ylabel="episode steps (50 Hz)", title="Episode duration")
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        xs = [j + (i - (len(modes) - 1) / 2) * width for j, delay in enumerate(delays) if (mode, delay) in by_key]
        summaries = [by_key[mode, delay] for delay in delays if (mode, delay) in by_key]
        axes[2].bar(xs, [s["boundary_jump_mean"] or 0.0 for s in summaries], width, label=mode)
        axes[2].scatter(xs, [s["within_jump_mean"] or 0.0 for s in summaries], marker="_", s=200, color="black")
    axes[2].set_xticks(range(len(delays)), [f"{delay * 1000 // CONTROL_HZ} ms" for delay in delays])
    axes[2].set(ylabel="mean ||a_t - a_t-1||", title="Action jump at chunk boundaries (ticks: within a chunk)")
    for axis in axes:
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _check_delays(delays: tuple[int, ...], execute_steps: int, action_horizon: int, modes: tuple[str, ...]) -> None:
    """The asynchronous modes request once max(execute_steps, d) actions of a chunk have run and take the next over
    d steps later: that must be within the chunk."""
    if any(mode != "sync" for mode in modes):
        for delay in delays:
            if max(execute_steps, delay, 1) + max(delay, 1) > action_horizon:
                raise ValueError(
                    f"delays: {delay} steps with execute_steps {execute_steps} runs past the chunk of "
                    f"{action_horizon} actions in the asynchronous modes (need max(execute_steps, d) + d <= horizon)"
                )


def main(args: Args) -> dict:
    if unknown := [mode for mode in args.modes if mode not in MODES]:
        raise ValueError(f"modes: {unknown} not in {MODES}")
    modes = tuple(mode for mode in args.modes if mode != "rtc_trained" or args.rtc_checkpoint is not None)
    if len(modes) < len(args.modes):
        logger.warning("rtc_trained left out: no --rtc-checkpoint")
    config = _config.get_config(args.config)
    _check_delays(args.delays, args.execute_steps, config.model.action_horizon, modes)
    sample_kwargs = {"num_steps": args.num_steps}
    policies: dict[str, base_policy.BasePolicy] = {}
    if any(mode != "rtc_trained" for mode in modes):
        policies["demo"] = policy_config.create_trained_policy(config, args.checkpoint, sample_kwargs=sample_kwargs)
    if "rtc_trained" in modes:
        policies["rtc"] = policy_config.create_trained_policy(
            _config.get_config(args.rtc_config), args.rtc_checkpoint, sample_kwargs=sample_kwargs
        )
    load_start = os.getloadavg()
    start = time.perf_counter()
    results = []
    for mode in modes:
        policy = policies["rtc" if mode == "rtc_trained" else "demo"]
        for delay in args.delays:
            environment = _aloha_env.AlohaSimEnvironment(
                task=TASK,
                max_steps=args.max_steps,
                resolution=args.resolution,
                seeds=[args.seed + i for i in range(args.num_episodes)],
            )
            setting_start = time.perf_counter()
            episodes = [
                run_episode(policy, environment, mode, delay, args.execute_steps) for _ in range(args.num_episodes)
            ]
            summary = summarize(episodes)
            seconds = time.perf_counter() - setting_start
            print(
                f"{mode:>11} d={delay:>2}: {summary['successes']}/{summary['episodes']} succeeded, "
                f"{summary['mean_steps']:.0f} steps, boundary jump {_cell(summary['boundary_jump_mean'])} "
                f"(within {_cell(summary['within_jump_mean'])}) [{seconds:.0f} s]",
                flush=True,
            )
            results.append(
                {
                    "mode": mode,
                    "delay": delay,
                    "delay_ms": delay * 1000 // CONTROL_HZ,
                    "summary": summary,
                    "seconds": round(seconds, 1),
                    "episodes": [_episode_json(episode) for episode in episodes],
                }
            )
    output = {
        "args": {key: str(value) if isinstance(value, pathlib.Path) else value for key, value in vars(args).items()},
        "control_hz": CONTROL_HZ,
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in load_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "seconds": round(time.perf_counter() - start, 1),
        "results": results,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_bytes(args.out_dir / "results.json", (json.dumps(output, indent=1) + "\n").encode())
    figure = plot(
        results,
        args.out_dir / "realtime.png",
        f"ALOHA sim transfer cube, {args.num_episodes} episodes per point (seeds {args.seed}+), "
        f"execute {args.execute_steps} actions per chunk",
    )
    print(table(results))
    print(f"Results: {args.out_dir / 'results.json'}; figure: {figure}")
    return output


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, force=True)
    main(tyro.cli(Args))
