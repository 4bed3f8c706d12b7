"""pi0 in the ALOHA sim, end to end, offline, in one command: demos → norm stats → train → serve → evaluate.

    uv run examples/aloha_sim/demo.py                # small pi0 on the CPU (defaults: ~30 min on 2 cores)
    uv run examples/aloha_sim/demo.py --full-size    # full-size pi0 fine-tuned from pi0_base (a GPU)

Every stage writes its output under `--out-dir` (built in a temp path and renamed, or resumable) together with a
record of the settings it was made with; a rerun skips the stages whose output is complete for the same settings
and redoes the rest (training resumes from its last checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import eval_expert as _eval_expert
import generate_data as _generate_data
import main as _main
import sim as _sim
import tqdm
import tyro

from openpi.shared import fileio
from openpi.training import config as _config
from openpi.training import data_loader as _data_loader
from openpi_client import websocket_client_policy as _websocket_client_policy

logger = logging.getLogger(__name__)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TASK = "gym_aloha/AlohaTransferCube-v0"
EXP_NAME = "demo"
STAMP_FILE = "demo_stage.json"  # the settings a stage's output was made with


@dataclasses.dataclass(frozen=True)
class Preset:
    """What the demo trains at one model size."""

    config_name: str
    resolution: tuple[int, int]  # rendered camera size (height, width), for the demos and the evaluation
    num_train_steps: int
    action_horizon: int  # steps executed from each predicted chunk before asking again


PRESETS = {
    False: Preset("pi0_aloha_sim_demo", (96, 96), 4_000, 10),
    True: Preset("pi0_aloha_sim_demo_full", (224, 224), 5_000, 10),
}


@dataclasses.dataclass
class Args:
    """Where the demo writes, how much it does, and at which model size."""

    # Everything goes here: lerobot/ (demos), assets/ (norm stats), checkpoints/, videos/, results.json.
    out_dir: pathlib.Path = pathlib.Path("data/aloha_sim/demo")
    # Scripted-expert demonstrations to train on (episodes from seeds --seed, --seed + 1, ...).
    num_demos: int = 50
    # Train steps; default: the preset's (4000 small, 5000 full size).
    num_train_steps: int | None = None
    # Closed-loop evaluation episodes (seeds 100000 + --seed + i, never seen in training).
    num_eval_episodes: int = 20
    # An evaluation episode that has not succeeded after this many steps (50 per second) fails.
    max_eval_steps: int = 400
    # Full-size pi0 (PaliGemma 3B) fine-tuned from the pi0_base weights (downloaded) at 224x224: needs a GPU.
    full_size: bool = False
    # Seeds the demos, the training run and the evaluation episodes.
    seed: int = 0
    # Port of the policy server; 0 picks a free one.
    port: int = 0


def _heading(index: int, title: str) -> None:
    print(f"\n=== [{index}/5] {title} ===", flush=True)


def _read_stamp(directory: pathlib.Path) -> dict | None:
    path = directory / STAMP_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: pathlib.Path, data: dict) -> None:
    fileio.atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


class Demo:
    """The demo's stages, their outputs under `args.out_dir`, and the settings each output depends on."""

    def __init__(self, args: Args) -> None:
        for field in ("num_demos", "num_eval_episodes", "max_eval_steps"):
            if getattr(args, field) < 1:
                raise ValueError(f"{field}: expected a positive integer, got {getattr(args, field)}")
        if args.num_train_steps is not None and args.num_train_steps < 1:
            raise ValueError(f"num_train_steps: expected a positive integer, got {args.num_train_steps}")
        self.args = args
        self.preset = PRESETS[args.full_size]
        self.out_dir = args.out_dir.resolve()
        self.num_train_steps = args.num_train_steps or self.preset.num_train_steps
        self.config = dataclasses.replace(
            _config.get_config(self.preset.config_name),
            exp_name=EXP_NAME,
            assets_base_dir=str(self.out_dir / "assets"),
            checkpoint_base_dir=str(self.out_dir / "checkpoints"),
            num_train_steps=self.num_train_steps,
            seed=args.seed,
        )
        self.data_config = self.config.data.create(self.config.assets_dirs, self.config.model)
        self.lerobot_home = self.out_dir / "lerobot"
        self.dataset_dir = self.lerobot_home / self.data_config.repo_id
        self.norm_stats_dir = self.config.assets_dirs / self.data_config.asset_id
        self.videos_dir = self.out_dir / "videos"
        self.results_path = self.out_dir / "results.json"
        self.eval_seed = 100_000 + args.seed
        # Each stage's settings include those of the stages before it, so changing one redoes everything after.
        self.data_stamp = {
            "num_demos": args.num_demos,
            "seed": args.seed,
            "resolution": list(self.preset.resolution),
            "task": TASK,
        }
        self.norm_stats_stamp = {**self.data_stamp, "config": self.config.name}
        self.train_stamp = {**self.norm_stats_stamp, "num_train_steps": self.num_train_steps}
        self.eval_stamp = {
            **self.train_stamp,
            "num_eval_episodes": args.num_eval_episodes,
            "max_eval_steps": args.max_eval_steps,
            "eval_seed": self.eval_seed,
            "action_horizon": self.preset.action_horizon,
        }

    @property
    def checkpoint_dir(self) -> pathlib.Path:
        """The last step's checkpoint (what the server serves)."""
        return self.config.checkpoint_dir / str(self.num_train_steps - 1)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "HF_LEROBOT_HOME": str(self.lerobot_home)}

    def generate_demos(self) -> None:
        _heading(1, f"Scripted-expert demonstrations ({self.args.num_demos} episodes of {TASK})")
        if _read_stamp(self.dataset_dir) == self.data_stamp:
            print(f"Cached: {self.dataset_dir}")
            return
        # Video-free (PNG frames in the parquet files): the training loader reads a frame without seeking a video.
        _generate_data.generate(
            self.dataset_dir,
            self.args.num_demos,
            self.preset.resolution,
            self.args.seed,
            task=TASK,
            video=False,
            repo_id=self.data_config.repo_id,
            overwrite=True,
            num_workers=_generate_data.DEFAULT_NUM_WORKERS,
        )
        _write_json(self.dataset_dir / STAMP_FILE, self.data_stamp)
        print(f"Wrote {self.dataset_dir}")

    def compute_norm_stats(self) -> None:
        _heading(2, "Normalization statistics")
        if _read_stamp(self.norm_stats_dir) == self.norm_stats_stamp:
            print(f"Cached: {self.norm_stats_dir / 'norm_stats.json'}")
            return
        os.environ["HF_LEROBOT_HOME"] = str(self.lerobot_home)
        path = _data_loader.compute_norm_stats(self.config)
        _write_json(self.norm_stats_dir / STAMP_FILE, self.norm_stats_stamp)
        print(f"Wrote {path}")

    def train(self) -> None:
        _heading(3, f"Training {self.config.name} for {self.num_train_steps} steps")
        run_dir = self.config.checkpoint_dir
        # The stamp sits beside the run dir: train.py --overwrite replaces the run dir itself.
        stamp_path = run_dir.with_name(f"{run_dir.name}_{STAMP_FILE}")
        same_run = stamp_path.exists() and json.loads(stamp_path.read_text()) == self.train_stamp
        if same_run and (self.checkpoint_dir / "params").is_dir():
            print(f"Cached: {self.checkpoint_dir}")
            return
        resume = same_run and run_dir.is_dir() and any(p.name.isdigit() for p in run_dir.iterdir())
        command = [
            sys.executable,
            str(REPO_ROOT / "scripts" / "train.py"),
            self.config.name,
            f"--exp-name={EXP_NAME}",
            f"--assets-base-dir={self.config.assets_base_dir}",
            f"--checkpoint-base-dir={self.config.checkpoint_base_dir}",
            f"--num-train-steps={self.num_train_steps}",
            # The learning rate decays over the whole run (optax needs the decay to end after the warm-up).
            f"--lr-schedule.decay-steps={max(self.num_train_steps, self.config.lr_schedule.warmup_steps + 1)}",
            f"--seed={self.args.seed}",
            "--resume" if resume else "--overwrite",
        ]
        print(("Resuming: " if resume else "") + " ".join(command[1:]), flush=True)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        _write_json(stamp_path, self.train_stamp)
        subprocess.run(command, env=self._env(), check=True, cwd=REPO_ROOT)

    @contextlib.contextmanager
    def serve(self):
        """Starts `scripts/serve_policy.py` on the checkpoint; yields its port once it accepts connections."""
        _heading(4, "Policy server")
        port = self.args.port or _free_port()
        command = [
            sys.executable,
            str(REPO_ROOT / "scripts" / "serve_policy.py"),
            "--env=ALOHA_SIM",
            f"--port={port}",
            # The demo's model is sized for a CPU: serve it there even on a machine whose GPU JAX cannot use.
            "--allow-cpu",
            "policy:checkpoint",
            f"--policy.config={self.config.name}",
            f"--policy.dir={self.checkpoint_dir}",
        ]
        log_path = self.out_dir / "server.log"
        print(f"Starting {' '.join(command[1:])} (log: {log_path})", flush=True)
        with log_path.open("w") as log:
            server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        try:
            _wait_for_port(server, port, log_path)
            print(f"Serving on port {port}")
            yield port
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    def evaluate(self) -> dict:
        if (results := _read_results(self.results_path)) is not None and results["stamp"] == self.eval_stamp:
            _heading(4, "Policy server")
            print("Not needed: the evaluation is cached")
            _heading(5, "Closed-loop evaluation")
            print(f"Cached: {self.results_path}")
            return results
        with self.serve() as port:
            _heading(5, f"Closed-loop evaluation ({self.args.num_eval_episodes} episodes through the websocket client)")
            shutil.rmtree(self.videos_dir, ignore_errors=True)
            args = _main.Args(
                host="127.0.0.1",
                port=port,
                task=TASK,
                num_episodes=self.args.num_eval_episodes,
                seed=self.eval_seed,
                max_steps=self.args.max_eval_steps,
                action_horizon=self.preset.action_horizon,
                resolution=self.preset.resolution,
                out_dir=self.videos_dir,
            )
            with _websocket_client_policy.WebsocketClientPolicy("127.0.0.1", port, wait_timeout_s=60) as policy:
                successes = _main.run_episodes(policy, args)
        expert = _expert_successes(self.eval_seed, self.args.num_eval_episodes)
        results = {
            "stamp": self.eval_stamp,
            "policy_successes": successes,
            "expert_successes": expert,
            "videos": sorted(str(p) for p in self.videos_dir.glob("episode_*.mp4")),
        }
        _write_json(self.results_path, results)
        return results

    def run(self) -> dict:
        start = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.generate_demos()
        self.compute_norm_stats()
        self.train()
        results = self.evaluate()
        self.report(results, time.perf_counter() - start)
        return results

    def report(self, results: dict, seconds: float) -> None:
        policy, expert = results["policy_successes"], results["expert_successes"]
        seeds = f"seeds {self.eval_seed}..{self.eval_seed + len(policy) - 1}"
        print(f"\n=== Results ({seconds / 60:.1f} min) ===")
        print(
            f"pi0 ({self.config.name}) success rate: {sum(policy) / len(policy):.0%} ({sum(policy)}/{len(policy)}, {seeds})"
        )
        print(
            f"Scripted expert success rate:  {sum(expert) / len(expert):.0%} ({sum(expert)}/{len(expert)}, same seeds)"
        )
        print(f"Videos: {self.videos_dir}/episode_*.mp4")
        print(f"Training curve: {self.config.checkpoint_dir / 'loss_curve.png'}")
        print("Serve the checkpoint:")
        print(
            f"  uv run scripts/serve_policy.py --env ALOHA_SIM policy:checkpoint --policy.config={self.config.name} "
            f"--policy.dir={self.checkpoint_dir}"
        )


def _read_results(path: pathlib.Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _expert_successes(seed: int, num_episodes: int) -> list[bool]:
    """The scripted expert's success on the evaluation seeds (no rendering: well under a second per episode)."""
    simulation = _sim.AlohaSim(TASK)
    return [_eval_expert.run_expert_episode(simulation, seed + i)[0] for i in range(num_episodes)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(server: subprocess.Popen, port: int, log_path: pathlib.Path, timeout_s: float = 300) -> None:
    """Blocks until the server accepts TCP connections on `port`; raises if it exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    with tqdm.tqdm(desc="Loading the checkpoint", bar_format="{desc}: {elapsed}") as bar:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"policy server exited with code {server.returncode}; see {log_path}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return
            time.sleep(0.5)
            bar.update()
    raise TimeoutError(f"policy server: not listening on port {port} after {timeout_s:.0f} s; see {log_path}")


def main(args: Args) -> dict:
    return Demo(args).run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, force=True)
    main(tyro.cli(Args))
