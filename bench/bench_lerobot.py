"""Benchmark of the LeRobot dataset: writing, random item access (with and without video), whole columns.

uv run bench/bench_lerobot.py [--episodes 5] [--frames 100] [--size 224]
"""

import argparse
from pathlib import Path
import tempfile
import time

import numpy as np

from openpi.lerobot.lerobot_dataset import LeRobotDataset

FPS = 50
ACTION_HORIZON = 50


def frame_image(index: int, camera: int, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return ((x + 2 * y + 3 * index + 50 * camera) % 256).astype(np.uint8)[..., None].repeat(3, axis=-1)


def write(root: Path, version: str, episodes: int, frames: int, size: int, cameras: int) -> float:
    features = {
        "observation.state": {"dtype": "float32", "shape": (14,), "names": None},
        "action": {"dtype": "float32", "shape": (14,), "names": None},
    }
    for camera in range(cameras):
        features[f"observation.images.cam{camera}"] = {"dtype": "video", "shape": (size, size, 3), "names": None}
    dataset = LeRobotDataset.create("bench/data", fps=FPS, features=features, root=root, codebase_version=version)
    start = time.perf_counter()
    for episode in range(episodes):
        for frame in range(frames):
            index = episode * frames + frame
            values = {"observation.state": np.full(14, index, np.float32), "action": np.full(14, -index, np.float32)}
            images = {f"observation.images.cam{c}": frame_image(index, c, size) for c in range(cameras)}
            dataset.add_frame(values | images | {"task": "bench"})
        dataset.save_episode()
    dataset.finalize()
    return episodes * frames / (time.perf_counter() - start)


def time_items(dataset: LeRobotDataset, count: int, seed: int = 0) -> float:
    indices = np.random.default_rng(seed).integers(0, len(dataset), size=count)
    dataset[int(indices[0])]  # open files outside the timing
    start = time.perf_counter()
    for index in indices:
        dataset[int(index)]
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    chunk = {"action": [t / FPS for t in range(ACTION_HORIZON)]}
    print(f"{args.episodes} episodes x {args.frames} frames, {args.size}x{args.size} H.264 (libx264 yuv420p, g=2)")
    for version in ("v2.1", "v3.0"):
        with tempfile.TemporaryDirectory() as tmp:
            no_video, video = Path(tmp) / "no_video", Path(tmp) / "video"
            write(no_video, version, args.episodes, args.frames, args.size, cameras=0)
            fps_written = write(video, version, args.episodes, args.frames, args.size, cameras=2)
            start = time.perf_counter()
            plain = LeRobotDataset("bench/data", root=no_video, delta_timestamps=chunk, local_files_only=True)
            open_s = time.perf_counter() - start
            with_video = LeRobotDataset("bench/data", root=video, delta_timestamps=chunk, local_files_only=True)
            start = time.perf_counter()
            columns = plain.hf_columns(["observation.state", "action"])
            columns_s = time.perf_counter() - start
            print(f"[{version}] write with 2 cameras: {fps_written:8.1f} frames/s")
            print(f"[{version}] open (no video):      {open_s * 1e3:8.2f} ms")
            print(
                f"[{version}] item, state + {ACTION_HORIZON}-step action chunk: {time_items(plain, 20000) * 1e6:8.1f} us"
            )
            print(f"[{version}] item + 2 video frames:  {time_items(with_video, 200) * 1e3:8.2f} ms")
            print(f"[{version}] hf_columns state+action ({len(columns['action'])} rows): {columns_s * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
