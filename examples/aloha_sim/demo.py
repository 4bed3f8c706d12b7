"""pi0 in the ALOHA sim, end to end, offline, in one command: demos → norm stats → train → serve → evaluate.

    uv run examples/aloha_sim/demo.py                # small pi0 on the CPU (defaults: 14-15 min on 2 cores)
    uv run examples/aloha_sim/demo.py --full-size    # full-size pi0 fine-tuned from pi0_base (a GPU)

Every stage writes its output under `--out-dir` (built in a temp path and renamed, or resumable) together with a
record of the settings it was made with; a rerun skips the stages whose output is complete for the same settings
and redoes the rest (training resumes from its last checkpoint). The evaluation also writes captioned videos, a
contact sheet, a per-seed chart, a loss curve and `results.json` (rates with Wilson intervals, per-episode outcomes,
seconds per stage).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import pathlib
import resource
import shutil
import socket
import subprocess
import sys
import time

import eval_expert as _eval_expert
import generate_data as _generate_data
import main as _main
import report as _report
import tqdm
import tyro

from openpi.shared import fileio
from openpi.training import config as _config
from openpi.training import data_loader as _data_loader

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
    # 10 of the small model's 20-step chunk run before the next request (bench/RESULTS.md: 5 steps did worse, the
    # whole chunk no better).
    False: Preset("pi0_aloha_sim_demo", (96, 96), 11_000, 10),
    True: Preset("pi0_aloha_sim_demo_full", (224, 224), 5_000, 10),
}


@dataclasses.dataclass
class Args:
    """Where the demo writes, how much it does, and at which model size."""

    # Everything goes here: lerobot/ (demos), assets/ (norm stats), checkpoints/, videos/, results.json.
    out_dir: pathlib.Path = pathlib.Path("data/aloha_sim/demo")
    # Scripted-expert demonstrations to train on (episodes from seeds --seed, --seed + 1, ...).
    num_demos: int = 50
    # Train steps; default: the preset's (11000 small, 5000 full size).
    num_train_steps: int | None = None
    # Closed-loop evaluation episodes (seeds 100000 + --seed + i, never seen in training).
    num_eval_episodes: int = 40
    # Evaluation episodes run at the same time (client processes, each with a policy server of its own).
    eval_workers: int = 2
    # Size (height, width) of the evaluation videos, rendered for viewing apart from the policy's input.
    video_resolution: tuple[int, int] = (240, 320)
    # An evaluation episode that has not succeeded after this many steps (50 per second) fails.
    max_eval_steps: int = 400
    # Full-size pi0 (PaliGemma 3B) fine-tuned from the pi0_base weights (downloaded) at 224x224: needs a GPU.
    full_size: bool = False
    # Seeds the demos, the training run and the evaluation episodes.
    seed: int = 0
    # Port of the (first) policy server; 0 picks a free one. Each evaluation worker gets a server of its own.
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
        for field in ("num_demos", "num_eval_episodes", "max_eval_steps", "eval_workers"):
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
        # Seconds per stage run (not cached) in this invocation; "expert" overlaps the server start and evaluation.
        self.times: dict[str, float] = {}
        self._server_started = 0.0
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
            "video_resolution": list(self.args.video_resolution),
            "servers": "one per worker",
        }

    @property
    def checkpoint_dir(self) -> pathlib.Path:
        """The last step's checkpoint (what the server serves)."""
        return self.config.checkpoint_dir / str(self.num_train_steps - 1)

    def _env(self) -> dict[str, str]:
        return {**os.environ, "HF_LEROBOT_HOME": str(self.lerobot_home)}

    def generate_demos(self) -> bool:
        """Records the demonstrations; False when cached."""
        _heading(1, f"Scripted-expert demonstrations ({self.args.num_demos} episodes of {TASK})")
        if _read_stamp(self.dataset_dir) == self.data_stamp:
            print(f"Cached: {self.dataset_dir}")
            return False
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
        return True

    def compute_norm_stats(self) -> bool:
        """Normalization statistics of the demos; False when cached."""
        _heading(2, "Normalization statistics")
        if _read_stamp(self.norm_stats_dir) == self.norm_stats_stamp:
            print(f"Cached: {self.norm_stats_dir / 'norm_stats.json'}")
            return False
        os.environ["HF_LEROBOT_HOME"] = str(self.lerobot_home)
        path = _data_loader.compute_norm_stats(self.config)
        _write_json(self.norm_stats_dir / STAMP_FILE, self.norm_stats_stamp)
        print(f"Wrote {path}")
        return True

    def train(self) -> bool:
        """Trains (or resumes) the policy; False when its last checkpoint is cached."""
        _heading(3, f"Training {self.config.name} for {self.num_train_steps} steps")
        run_dir = self.config.checkpoint_dir
        # The stamp sits beside the run dir: train.py --overwrite replaces the run dir itself.
        stamp_path = run_dir.with_name(f"{run_dir.name}_{STAMP_FILE}")
        same_run = stamp_path.exists() and json.loads(stamp_path.read_text()) == self.train_stamp
        if same_run and (self.checkpoint_dir / "params").is_dir():
            print(f"Cached: {self.checkpoint_dir}")
            return False
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
        return True

    def _start_server(self, port: int, log_path: pathlib.Path) -> subprocess.Popen:
        """Starts `scripts/serve_policy.py` on the checkpoint at `port`, its output going to `log_path`."""
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
        print(f"Starting {' '.join(command[1:])} (log: {log_path})", flush=True)
        with log_path.open("w") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    @contextlib.contextmanager
    def serve(self, count: int):
        """Starts `count` policy servers on the checkpoint; yields their ports once they accept connections. One per
        evaluation worker: each server then answers one client, in the same order every run."""
        _heading(4, "Policy server" if count == 1 else f"Policy servers ({count}, one per evaluation worker)")
        self._server_started = time.perf_counter()
        ports = [self.args.port or _free_port()] + [_free_port() for _ in range(count - 1)]
        log_paths = [self.out_dir / ("server.log" if i == 0 else f"server_{i}.log") for i in range(count)]
        servers: list[subprocess.Popen] = []
        try:
            for port, log_path in zip(ports, log_paths, strict=True):
                servers.append(self._start_server(port, log_path))
            for server, port, log_path in zip(servers, ports, log_paths, strict=True):
                _wait_for_port(server, port, log_path)
            print(f"Serving on port{'s' if count > 1 else ''} {', '.join(map(str, ports))}")
            yield ports
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()

    def evaluate(self) -> dict | None:
        """The policy's and the expert's episodes on the evaluation seeds; None when cached (results.json kept)."""
        if (results := _read_results(self.results_path)) is not None and results.get("stamp") == self.eval_stamp:
            _heading(4, "Policy server")
            print("Not needed: the evaluation is cached")
            _heading(5, "Closed-loop evaluation")
            print(f"Cached: {self.results_path}")
            return None
        # The expert's episodes need no server or rendering: run them beside the server's start.
        expert_pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        expert_start = time.perf_counter()
        expert_future = expert_pool.submit(
            _eval_expert.expert_episodes, TASK, self.eval_seed, self.args.num_eval_episodes
        )
        expert_future.add_done_callback(lambda _: self.times.__setitem__("expert", time.perf_counter() - expert_start))
        num_workers = min(self.args.eval_workers, self.args.num_eval_episodes)
        with expert_pool, self.serve(num_workers) as ports:
            self.times["server_start"] = time.perf_counter() - self._server_started
            _heading(
                5,
                f"Closed-loop evaluation ({self.args.num_eval_episodes} episodes, {self.args.eval_workers} at a time, "
                "through the websocket client)",
            )
            shutil.rmtree(self.videos_dir, ignore_errors=True)
            args = _main.Args(
                host="127.0.0.1",
                ports=tuple(ports),
                task=TASK,
                num_episodes=self.args.num_eval_episodes,
                seed=self.eval_seed,
                max_steps=self.args.max_eval_steps,
                action_horizon=self.preset.action_horizon,
                resolution=self.preset.resolution,
                out_dir=self.videos_dir,
                num_workers=self.args.eval_workers,
                video_resolution=self.args.video_resolution,
            )
            evaluation_start = time.perf_counter()
            episodes = _main.evaluate(args)
            self.times["evaluation"] = time.perf_counter() - evaluation_start
            expert = expert_future.result()
            # result() may return before the done-callback has run: then it is now.
            self.times.setdefault("expert", time.perf_counter() - expert_start)
        return {"episodes": episodes, "expert": expert}

    def figures(self, episodes: list[_main.EpisodeResult], expert: list[tuple[bool, int, int]]) -> dict[str, str]:
        """The contact sheet, the per-seed chart and the loss curve (PNGs under the out dir)."""
        start = time.perf_counter()
        successes = [episode.success for episode in episodes]
        sheet = _report.contact_sheet(
            [episode.last_frame for episode in episodes],
            [
                f"{episode.seed}: {'success' if episode.success else 'failure'}, step {episode.steps}"
                for episode in episodes
            ],
            successes,
            self.out_dir / "contact_sheet.png",
        )
        chart = _report.seeds_chart(
            [episode.seed for episode in episodes],
            [episode.max_reward for episode in episodes],
            successes,
            [max_reward for _, _, max_reward in expert],
            self.out_dir / "results.png",
            f"{self.config.name}: {sum(successes)}/{len(successes)} handed over; scripted expert "
            f"{sum(success for success, _, _ in expert)}/{len(expert)}",
        )
        curve = _report.loss_curve(
            self.config.checkpoint_dir / "metrics.jsonl",
            self.out_dir / "loss_curve.png",
            f"{self.config.name}: {self.num_train_steps} steps, batch {self.config.batch_size}, "
            f"{self.args.num_demos} demos",
        )
        self.times["figures"] = time.perf_counter() - start
        return {"contact_sheet": str(sheet), "results": str(chart), "loss_curve": str(curve)}

    def run(self) -> dict:
        start = time.perf_counter()
        load = os.getloadavg()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for stage, step in (
            ("demos", self.generate_demos),
            ("norm_stats", self.compute_norm_stats),
            ("train", self.train),
        ):
            stage_start = time.perf_counter()
            if step():
                self.times[stage] = time.perf_counter() - stage_start
        evaluated = self.evaluate()
        if evaluated is None:
            results = _read_results(self.results_path)
        else:
            episodes, expert = evaluated["episodes"], evaluated["expert"]
            figures = self.figures(episodes, expert)
            self.times["total"] = time.perf_counter() - start
            results = self._results(episodes, expert, figures, load)
            _write_json(self.results_path, results)
        self.report(results, time.perf_counter() - start)
        return results

    def _results(self, episodes, expert, figures: dict[str, str], load: tuple[float, ...]) -> dict:
        successes = [episode.success for episode in episodes]
        expert_successes = [success for success, _, _ in expert]
        return {
            "stamp": self.eval_stamp,
            "config": self.config.name,
            "policy": _rate(successes),
            "expert": _rate(expert_successes),
            "seeds": [episode.seed for episode in episodes],
            "policy_successes": successes,
            "expert_successes": expert_successes,
            "episodes": [
                {
                    **episode.to_json(),
                    "expert_success": expert_success,
                    "expert_steps": expert_steps,
                    "expert_max_reward": expert_reward,
                }
                for episode, (expert_success, expert_steps, expert_reward) in zip(episodes, expert, strict=True)
            ],
            # Seconds per stage in the run that made these results; a stage missing here was cached.
            "times_s": {name: round(seconds, 1) for name, seconds in self.times.items()},
            # CPU seconds of this process and its finished subprocesses (recording, training, server, clients): on a
            # busy machine, wall time overstates what the demo costs; on n idle cores it takes at least cpu_s / n.
            "cpu_s": round(sum(_cpu_seconds()), 1),
            "machine": {
                "cpu_count": os.cpu_count(),
                "load_average_at_start": [round(x, 2) for x in load],
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            },
            "figures": figures,
            "videos": [episode.video for episode in episodes],
        }

    def report(self, results: dict, seconds: float) -> None:
        policy, expert = results["policy"], results["expert"]
        seeds = results["seeds"]
        print(f"\n=== Results ({seconds / 60:.1f} min) ===")
        print(f"pi0 ({results['config']}) success rate: {_rate_text(policy)} (seeds {seeds[0]}..{seeds[-1]})")
        print(f"Scripted expert success rate:  {_rate_text(expert)} (same seeds)")
        times = results["times_s"]
        print("Minutes per stage: " + ", ".join(f"{name} {times[name] / 60:.1f}" for name in times))
        if "cpu_s" in results:
            load = results["machine"]["load_average_at_start"][0]
            print(
                f"CPU time: {results['cpu_s'] / 60:.1f} min on {results['machine']['cpu_count']} cores (load {load:.1f} at start)"
            )
        print(f"Videos: {self.videos_dir}/episode_*.mp4 ({'x'.join(map(str, self.args.video_resolution[::-1]))})")
        for name, path in results["figures"].items():
            print(f"{name.replace('_', ' ').capitalize()}: {path}")
        print("Serve the checkpoint:")
        print(
            f"  uv run scripts/serve_policy.py --env ALOHA_SIM policy:checkpoint --policy.config={self.config.name} "
            f"--policy.dir={self.checkpoint_dir}"
        )


def _cpu_seconds() -> tuple[float, float]:
    """User + system CPU seconds of this process and of its waited-for subprocesses."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _rate(successes: list[bool]) -> dict:
    low, high = _report.wilson_interval(sum(successes), len(successes))
    return {
        "successes": sum(successes),
        "episodes": len(successes),
        "rate": sum(successes) / len(successes),
        "wilson_95": [round(low, 4), round(high, 4)],
    }


def _rate_text(rate: dict) -> str:
    low, high = rate["wilson_95"]
    return f"{rate['rate']:.0%} ({rate['successes']}/{rate['episodes']}; Wilson 95 % interval {low:.0%}-{high:.0%})"


def _read_results(path: pathlib.Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


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
