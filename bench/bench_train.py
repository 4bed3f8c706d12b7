"""Benchmarks: train steps/s (debug model and a gemma_300m-sized one, batch 8) and norm-stats frames/s.

    uv run bench/bench_train.py [--steps 20] [--skip-300m] [--episodes 200]

Norm stats are timed on a generated ALOHA-shaped dataset with video cameras: the column-wise path of
scripts/compute_norm_stats.py against a per-frame loop that decodes every sample (videos included).
"""

import argparse
import dataclasses
import os
import pathlib
import tempfile
import time

import jax
import numpy as np

from openpi.lerobot import lerobot_dataset
from openpi.models import gemma
from openpi.shared import normalize
from openpi.training import config as _config
from openpi.training import data_loader
from openpi.training import sharding
from openpi.training import trainer


def bench_train(name: str, config: _config.TrainConfig, steps: int) -> None:
    mesh = sharding.make_mesh(1)
    state, _ = trainer.init_train_state(config, jax.random.key(0), mesh)
    loader = iter(data_loader.create_data_loader(config, sharding=sharding.data_sharding(mesh)))
    step_fn = jax.jit(lambda rng, s, b: trainer.train_step(config, rng, s, b), donate_argnums=(1,))
    rng = jax.random.key(1)
    state, info = step_fn(rng, state, next(loader))  # compile
    jax.block_until_ready(info)
    start = time.perf_counter()
    for _ in range(steps):
        state, info = step_fn(rng, state, next(loader))
    jax.block_until_ready(info)
    elapsed = time.perf_counter() - start
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"train {name}: batch {config.batch_size}, {steps / elapsed:.3f} steps/s ({jax.default_backend()}, "
        f"{os.cpu_count()} cpus, load average {load})"
    )


def _video_dataset(root: pathlib.Path, episodes: int, length: int = 50) -> str:
    repo_id = "bench/aloha_video"
    features = {
        "observation.state": {"dtype": "float32", "shape": (14,), "names": None},
        "action": {"dtype": "float32", "shape": (14,), "names": None},
    }
    features |= {
        f"observation.images.{cam}": {"dtype": "video", "shape": (96, 128, 3), "names": ["height", "width", "channels"]}
        for cam in ("cam_high", "cam_left_wrist", "cam_right_wrist")
    }
    dataset = lerobot_dataset.LeRobotDataset.create(repo_id, fps=50, features=features, root=root / repo_id)
    rng = np.random.default_rng(0)
    for _ in range(episodes):
        for _ in range(length):
            frame = {k: rng.standard_normal(14).astype(np.float32) for k in ("observation.state", "action")}
            frame |= {k: rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for k in features if "images" in k}
            dataset.add_frame(frame | {"task": "transfer cube"})
        dataset.save_episode()
    dataset.finalize()
    return repo_id


def bench_norm_stats(episodes: int, slow_frames: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_LEROBOT_HOME"] = tmp
        repo_id = _video_dataset(pathlib.Path(tmp), episodes)
        base = _config.get_config("debug")
        data = dataclasses.replace(
            base.data,
            repo_id=repo_id,
            repack_transforms=_config.ALOHA_THREE_CAMERA_REPACK,
            base_config=_config.DataConfig(local_files_only=True),
        )
        config = dataclasses.replace(base, data=data, assets_base_dir=str(pathlib.Path(tmp) / "assets"))
        data_config = config.data.create(config.assets_dirs, config.model)

        start = time.perf_counter()
        batches, count = data_loader.norm_stats_batches(data_config, config.model)
        normalize.compute_norm_stats(batches, num_batches=count, progress=False)
        frames = len(data_loader.open_lerobot_dataset(data_config))
        fast = frames / (time.perf_counter() - start)

        dataset = data_loader.create_dataset(data_config, config.model)
        transform = data_loader.sample_transforms(data_config, normalize=False, model_transforms=False)
        start = time.perf_counter()
        for index in range(slow_frames):
            transform(dataset[index * (len(dataset) // slow_frames)])
        slow = slow_frames / (time.perf_counter() - start)
        print(
            f"norm stats: {episodes} episodes / {frames} frames: columns {fast:,.0f} frames/s, "
            f"per-frame decode {slow:,.0f} frames/s ({fast / slow:.0f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip-300m", action="store_true")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--slow-frames", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("OPENPI_DATA_HOME", str(pathlib.Path(tmp) / "data"))
        os.environ["HF_LEROBOT_HOME"] = str(pathlib.Path(tmp) / "lerobot")
        debug = dataclasses.replace(_config.get_config("debug"), assets_base_dir=str(pathlib.Path(tmp) / "assets"))
        bench_train("debug", debug, args.steps)
        if not args.skip_300m:
            expert = gemma.get_config("gemma_300m")
            model = dataclasses.replace(debug.model, paligemma_variant=expert, action_expert_variant=expert)
            bench_train("gemma_300m-sized (both experts)", dataclasses.replace(debug, model=model), args.steps)
    bench_norm_stats(args.episodes, args.slow_frames)


if __name__ == "__main__":
    main()
