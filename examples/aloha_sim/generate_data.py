"""Records scripted-expert demonstrations in the ALOHA sim as a LeRobot dataset (the demo's training data).

    uv run examples/aloha_sim/generate_data.py --out-root data/aloha_sim/demos --num-episodes 50

Episode `i` is the first successful seed at or after `seed + i` (only successful episodes are kept unless
`--keep-failures`); each runs until the task succeeds. Frames: `observation.state` (14,), `action` (14,) (the
joint-position command sent at that frame), `observation.images.cam_high` (+ wrist cameras), task prompt.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil

import env as _env
import expert as _expert
import numpy as np
import sim as _sim
import tqdm
import tyro

from openpi.training import lerobot_dataset

logger = logging.getLogger(__name__)


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
) -> pathlib.Path:
    """Writes `num_episodes` expert episodes to `out_root` (built in a sibling temp dir, renamed when complete)."""
    out_root = pathlib.Path(out_root)
    if num_episodes < 1:
        raise ValueError(f"num_episodes: expected >= 1, got {num_episodes}")
    if out_root.exists() and not overwrite:
        raise FileExistsError(f"out_root: {out_root} already exists (pass overwrite=True / --overwrite to replace it)")
    cameras = ("top", "left_wrist", "right_wrist") if wrist_cameras else ("top",)
    simulation = _sim.AlohaSim(task)
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
    attempts = 0
    with tqdm.tqdm(total=num_episodes, desc="Recording expert episodes", unit="episode") as progress:
        while progress.n < num_episodes:
            frames, succeeded = record_episode(simulation, seed + attempts, cameras, resolution)
            attempts += 1
            if not (succeeded or keep_failures):
                logger.warning("Seed %d: the expert failed; episode dropped", seed + attempts - 1)
                continue
            for frame in frames:
                dataset.add_frame({**frame, "task": simulation.task.prompt})
            dataset.save_episode()
            progress.update()
            progress.set_postfix(expert_success=f"{progress.n}/{attempts}" if not keep_failures else "kept all")
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
    )
    print(f"Wrote {args.num_episodes} episodes to {path}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, force=True)
    main(tyro.cli(Args))
