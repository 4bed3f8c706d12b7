"""Records scripted-expert demonstrations in the ALOHA sim as a LeRobot dataset (the demo's training data).

    uv run examples/aloha_sim/generate_data.py --out-root data/aloha_sim/demos --num-episodes 50

Episode `i` is the first successful seed at or after `seed + i` (only successful episodes are kept unless
`--keep-failures`); each runs until the task succeeds. Frames: `observation.state` (14,), `action` (14,) (the
joint-position command sent at that frame), `observation.images.cam_high` (+ wrist cameras), task prompt.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
import concurrent.futures
import dataclasses
import itertools
import logging
import multiprocessing
import os
import pathlib
import shutil

import env as _env
import expert as _expert
import numpy as np
import sim as _sim
import tqdm
import tyro

from openpi.lerobot import lerobot_dataset

logger = logging.getLogger(__name__)

# Two simulating processes nearly halve the recording time on a 2-core machine; more rarely pay (rendering is
# single-threaded, and this process encodes and writes the frames).
DEFAULT_NUM_WORKERS = min(2, os.cpu_count() or 1)


@dataclasses.dataclass
class Args:
    """What to record and where."""

    # Dataset directory (the LeRobot root); it must not exist yet unless --overwrite.
    out_root: pathlib.Path = pathlib.Path("data/aloha_sim/demos")
    # Successful episodes to record.
    num_episodes: int = 50
    # gym-aloha task id (the scripted expert knows the transfer cube task).
    task: str = "gym_aloha/AlohaTransferCube-v0"
    # Episodes start from seeds `seed`, `seed + 1`, ... (failed seeds are skipped).
    seed: int = 0
    # Camera size (height, width).
    resolution: tuple[int, int] = _env.DEFAULT_RESOLUTION
    # Also record the wrist cameras (cam_left_wrist, cam_right_wrist).
    wrist_cameras: bool = False
    # Keep episodes where the expert failed (they are dropped by default).
    keep_failures: bool = False
    # Store camera frames as mp4 video (else as PNG images inside the parquet files).
    video: bool = True
    # LeRobot format: v2.1 or v3.0.
    codebase_version: str = "v2.1"
    # Name recorded in the dataset's metadata (it is read back from --out-root, not from the hub).
    repo_id: str = "openpi/aloha_sim_transfer_cube_scripted"
    # Replace an existing dataset at --out-root.
    overwrite: bool = False
    # Processes simulating episodes in parallel (the dataset is written by this one); 1 records in this process.
    num_workers: int = DEFAULT_NUM_WORKERS


def features(cameras: tuple[str, ...], resolution: tuple[int, int], video: bool = True) -> dict[str, dict]:
    """The dataset's LeRobot features for these scene cameras."""
    height, width = resolution
    result = {
        "observation.state": {"dtype": "float32", "shape": (_sim.STATE_DIM,), "names": None},
        "action": {"dtype": "float32", "shape": (_sim.STATE_DIM,), "names": None},
    }
    for camera in cameras:
        result[f"observation.images.{_sim.CAMERAS[camera]}"] = {
            "dtype": "video" if video else "image",
            "shape": (height, width, 3),
            "names": ["height", "width", "channels"],
        }
    return result


def record_episode(
    simulation: _sim.AlohaSim, seed: int, cameras: tuple[str, ...], resolution: tuple[int, int]
) -> tuple[list[dict], bool]:
    """Runs the expert from `seed` until success or the end of its plan; returns the frames and whether it succeeded."""
    simulation.reset(seed)
    frames = []
    for action in _expert.plan(simulation):
        observation = _env.observe(simulation, cameras, resolution)
        frame = {"observation.state": observation["state"], "action": action.astype(np.float32)}
        for name, chw in observation["images"].items():
            frame[f"observation.images.{name}"] = chw.transpose(1, 2, 0)
        frames.append(frame)
        simulation.step(action)
        if simulation.is_success:
            break
    return frames, simulation.is_success


_worker_simulation: _sim.AlohaSim | None = None


def _start_worker(task: str) -> None:
    global _worker_simulation
    _worker_simulation = _sim.AlohaSim(task)


def _record_in_worker(seed: int, cameras: tuple[str, ...], resolution: tuple[int, int]) -> tuple[list[dict], bool]:
    assert _worker_simulation is not None, "worker not started"
    return record_episode(_worker_simulation, seed, cameras, resolution)


def recorded_episodes(
    task: str, first_seed: int, cameras: tuple[str, ...], resolution: tuple[int, int], num_workers: int = 1
) -> Iterator[tuple[int, list[dict], bool]]:
    """`(seed, frames, succeeded)` for seeds `first_seed`, `first_seed + 1`, ... in order, without end.

    With `num_workers` > 1, that many processes simulate the next episodes while the caller handles this one.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers: expected >= 1, got {num_workers}")
    if num_workers == 1:
        simulation = _sim.AlohaSim(task)
        for seed in itertools.count(first_seed):
            yield seed, *record_episode(simulation, seed, cameras, resolution)
        return
    # Spawned, not forked: the parent may already run JAX threads, which a fork would copy mid-flight.
    pool = concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(task,)
    )
    seeds = itertools.count(first_seed)
    in_flight: collections.deque = collections.deque()
    try:
        while True:
            while len(in_flight) < num_workers:
                seed = next(seeds)
                in_flight.append((seed, pool.submit(_record_in_worker, seed, cameras, resolution)))
            seed, episode = in_flight.popleft()
            yield seed, *episode.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def generate(
    out_root: pathlib.Path,
    num_episodes: int,
    resolution: tuple[int, int] = _env.DEFAULT_RESOLUTION,
    seed: int = 0,
    *,
    task: str = "gym_aloha/AlohaTransferCube-v0",
    wrist_cameras: bool = False,
    keep_failures: bool = False,
    video: bool = True,
    codebase_version: str = "v2.1",
    repo_id: str = "openpi/aloha_sim_transfer_cube_scripted",
    overwrite: bool = False,
    num_workers: int = 1,
) -> pathlib.Path:
    """Writes `num_episodes` expert episodes to `out_root` (built in a sibling temp dir, renamed when complete)."""
    out_root = pathlib.Path(out_root)
    if num_episodes < 1:
        raise ValueError(f"num_episodes: expected >= 1, got {num_episodes}")
    if out_root.exists() and not overwrite:
        raise FileExistsError(f"out_root: {out_root} already exists (pass overwrite=True / --overwrite to replace it)")
    cameras = ("top", "left_wrist", "right_wrist") if wrist_cameras else ("top",)
    prompt = _sim.get_task(task).prompt
    staging = out_root.with_name(f".{out_root.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    dataset = lerobot_dataset.LeRobotDataset.create(
        repo_id,
        fps=_sim.FPS,
        features=features(cameras, resolution, video),
        root=staging,
        robot_type="aloha",
        codebase_version=codebase_version,
    )
    episodes = recorded_episodes(task, seed, cameras, resolution, num_workers)
    with tqdm.tqdm(total=num_episodes, desc="Recording expert episodes", unit="episode") as progress:
        for attempts, (episode_seed, frames, succeeded) in enumerate(episodes, start=1):
            if not (succeeded or keep_failures):
                logger.warning("Seed %d: the expert failed; episode dropped", episode_seed)
                continue
            for frame in frames:
                dataset.add_frame({**frame, "task": prompt})
            dataset.save_episode()
            progress.update()
            progress.set_postfix(expert_success=f"{progress.n}/{attempts}" if not keep_failures else "kept all")
            if progress.n == num_episodes:
                break
    episodes.close()
    dataset.finalize()
    if out_root.exists():
        shutil.rmtree(out_root)
    out_root.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(out_root)
    return out_root


def main(args: Args) -> None:
    path = generate(
        args.out_root,
        args.num_episodes,
        args.resolution,
        args.seed,
        task=args.task,
        wrist_cameras=args.wrist_cameras,
        keep_failures=args.keep_failures,
        video=args.video,
        codebase_version=args.codebase_version,
        repo_id=args.repo_id,
        overwrite=args.overwrite,
        num_workers=args.num_workers,
    )
    print(f"Wrote {args.num_episodes} episodes to {path}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
