"""bench/bench_realtime.py: the injected delay in control steps (sync holds, the asynchronous modes take a chunk over
d steps after its request), what the requests carry, the jump bookkeeping, and one tiny sweep with a real pi0."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import flax.nnx as nnx
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from openpi.shared import normalize as _normalize
from openpi.training import config as _config

REPO = pathlib.Path(__file__).resolve().parents[2]
HORIZON = 20
STEP = 0.01  # chunk n answers the start pose + n * STEP on every joint


def _load_bench():
    """The bench script as a module, leaving no bare ALOHA sim module names (`env`, `sim`, ...) behind."""
    names = {path.stem for path in (REPO / "examples" / "aloha_sim").glob("*.py")}
    saved_modules = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    saved_path = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location("bench_realtime", REPO / "bench" / "bench_realtime.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved_path
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved_modules)


bench = _load_bench()


class _NumberedChunks:
    """Answers request n (from 1) with HORIZON copies of the episode's start pose + n * STEP; records requests."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._start: np.ndarray | None = None

    def infer(self, obs: dict) -> dict:
        if self._start is None:
            self._start = np.asarray(obs["state"], np.float64)
        self.requests.append(obs)
        return {"actions": np.repeat(self._start[None] + len(self.requests) * STEP, HORIZON, axis=0)}

    def reset(self) -> None:
        pass


def _episode(mode: str, delay: int, max_steps: int = 40):
    policy = _NumberedChunks()
    environment = bench._aloha_env.AlohaSimEnvironment(max_steps=max_steps, resolution=(16, 16), seeds=[3])
    episode = bench.run_episode(policy, environment, mode, delay, execute_steps=10)
    return episode, policy.requests


def test_sync_holds_the_last_command_while_each_request_is_computed():
    episode, requests = _episode("sync", delay=5)
    # Runner steps 0-9 (chunk 1), hold 5, 10-19 (chunk 2), hold 5, 20-29 (chunk 3): 40 steps.
    assert (episode.steps, episode.held_steps, episode.chunks, len(requests)) == (40, 10, 3, 3)
    assert all("prev_actions" not in obs and "images" in obs for obs in requests)
    assert episode.boundary_jumps == pytest.approx([STEP * np.sqrt(14)] * 2)
    assert episode.within_jumps == [0.0] * 27
    assert (episode.seed, episode.success) == (3, False)


@pytest.mark.parametrize("mode", ["naive", "rtc_guided"])
def test_async_modes_take_a_chunk_over_delay_steps_after_its_request(mode):
    episode, requests = _episode(mode, delay=5)
    # Requests at steps 0 (blocking), 10, 20, 30; the chunks take over at 15, 25, 35: no step is held.
    assert (episode.steps, episode.held_steps, episode.chunks, len(requests)) == (40, 0, 4, 4)
    assert len(episode.boundary_jumps) == 3
    assert len(episode.within_jumps) == 39 - 3
    rtc_keys = [(obs.get("inference_delay"), len(obs.get("prev_actions", ()))) for obs in requests[1:]]
    assert rtc_keys == ([(5, HORIZON - 10)] * 3 if mode == "rtc_guided" else [(None, 0)] * 3)


def test_a_zero_delay_is_one_step_in_the_async_modes_and_none_in_sync():
    assert _episode("sync", delay=0)[0].held_steps == 0
    _, requests = _episode("rtc_guided", delay=0)
    assert [obs["inference_delay"] for obs in requests[1:]] == [1] * 3


def test_delays_that_run_past_the_chunk_are_refused():
    bench._check_delays((0, 5, 10), execute_steps=10, action_horizon=20, modes=("naive",))
    bench._check_delays((15,), execute_steps=10, action_horizon=20, modes=("sync",))
    with pytest.raises(ValueError, match="delays: 11 steps with execute_steps 10 runs past the chunk of 20"):
        bench._check_delays((11,), execute_steps=10, action_horizon=20, modes=("sync", "rtc_guided"))


def _fresh_checkpoint(directory: pathlib.Path, config_name: str) -> pathlib.Path:
    """A freshly initialised model of `config_name` saved as a policy checkpoint, with norm stats that keep its
    actions within a few hundredths of the start pose (the sim stays stable)."""
    config = _config.get_config(config_name)
    params = nnx.to_pure_dict(nnx.state(config.model.create(jax.random.key(0)), nnx.Param))
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(directory / "params", {"params": params})
    environment = bench._aloha_env.AlohaSimEnvironment(seeds=[0])
    environment.reset()
    pose = environment.get_observation()["state"].astype(np.float64)
    stats = _normalize.NormStats(mean=pose, std=np.full(14, 0.01), q01=pose - 0.01, q99=pose + 0.01)
    asset_id = config.data.create(config.assets_dirs, config.model).asset_id
    _normalize.save(directory / "assets" / asset_id, {"state": stats, "actions": stats})
    return directory


@pytest.mark.slow
def test_a_tiny_sweep_with_a_real_pi0_writes_results_a_figure_and_a_table(tmp_path, capsys):
    args = bench.Args(
        checkpoint=_fresh_checkpoint(tmp_path / "demo", "pi0_aloha_sim_demo"),
        rtc_checkpoint=_fresh_checkpoint(tmp_path / "rtc", "pi0_aloha_sim_demo_rtc"),
        delays=(0, 3),
        num_episodes=1,
        max_steps=25,
        num_steps=2,
        out_dir=tmp_path / "out",
    )
    output = bench.main(args)
    rows = [(row["mode"], row["delay"]) for row in output["results"]]
    assert rows == [(mode, delay) for mode in bench.MODES for delay in (0, 3)]
    for row in output["results"]:
        summary = row["summary"]
        assert summary["episodes"] == 1
        assert summary["mean_steps"] == 25  # an untrained model never succeeds
        assert summary["boundary_jump_mean"] is not None
        assert summary["within_jump_mean"] is not None
    # sync, d=3: steps 0-9, held 3, 10-19, held 2 of 3 when the 25 steps run out.
    assert output["results"][1]["summary"]["mean_held_steps"] == 5
    written = json.loads((tmp_path / "out" / "results.json").read_text())["results"][0]
    assert written["mode"] == "sync"
    assert written["episodes"][0]["boundary_jumps"]["count"] == 2  # requests at steps 10 and 20
    assert (tmp_path / "out" / "realtime.png").stat().st_size > 10_000
    assert "| rtc_trained | 3 / 60 | 0/1 (0%) |" in capsys.readouterr().out
