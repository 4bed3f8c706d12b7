"""Tests for openpi.policies.policy: Policy.infer / infer_batch semantics and PolicyRecorder files.

(They live here because tests/policies/ belongs to the robot-transforms work; they test src/openpi/policies/policy.py.)
"""

from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openpi.models import model as _model
from openpi.policies import policy as _policy
from openpi.serving import batching
from shared import file_modes

STATE_DIM, HORIZON, ACTION_DIM = 3, 4, 2


class LinearModel(_model.BaseModel):
    """A deterministic model at the BaseModel interface: actions = W·state + mean(base image) + offset."""

    def __init__(self) -> None:
        super().__init__(action_dim=ACTION_DIM, action_horizon=HORIZON, max_token_len=4)
        self.proj = nnx.Linear(STATE_DIM, HORIZON * ACTION_DIM, rngs=nnx.Rngs(0))

    def _predict(self, observation: _model.Observation, offset: float) -> jax.Array:
        batch = observation.state.shape[0]
        image_mean = observation.images["base_0_rgb"].reshape(batch, -1).mean(axis=1)
        flat = self.proj(observation.state) + image_mean[:, None] + offset
        return flat.reshape(batch, HORIZON, ACTION_DIM)

    def compute_loss(self, rng, observation, actions, *, train=False):
        return jnp.mean(jnp.square(self._predict(observation, 0.0) - actions), axis=-1)

    def sample_actions(self, rng, observation, *, offset: float = 0.0):
        return self._predict(observation, offset)


def _obs(value: float, state_dim: int = STATE_DIM) -> dict:
    return {
        "image": {"base_0_rgb": np.full((4, 4, 3), value, np.float32)},
        "image_mask": {"base_0_rgb": np.True_},
        "state": np.arange(state_dim, dtype=np.float32) * value,
        "prompt": "unused",
    }


def _drop_prompt(data: dict) -> dict:
    """Requires a prompt and drops it; like every transform, returns a new dict and leaves its input as it is."""
    rest = dict(data)
    del rest["prompt"]
    return rest


def _first_action_dim(data: dict) -> dict:
    return {**data, "actions": data["actions"][:, :1]}


@pytest.fixture
def policy() -> _policy.Policy:
    return _policy.Policy(
        LinearModel(),
        transforms=[_drop_prompt],
        output_transforms=[_first_action_dim],
        sample_kwargs={"offset": 10.0},
        metadata={"robot": "toy"},
    )


def _expected_actions(obs: dict) -> np.ndarray:
    model = LinearModel()
    flat = np.asarray(model.proj(jnp.asarray(obs["state"])[None]))[0] + obs["image"]["base_0_rgb"].mean() + 10.0
    return flat.reshape(HORIZON, ACTION_DIM)[:, :1]


def test_infer_applies_transforms_model_and_sample_kwargs_and_adds_timing(policy):
    obs = _obs(0.5)
    result = policy.infer(obs)
    np.testing.assert_allclose(result["actions"], _expected_actions(obs), rtol=1e-6)
    np.testing.assert_array_equal(result["state"], obs["state"])
    assert set(result["policy_timing"]) == {"infer_ms"}
    assert result["policy_timing"]["infer_ms"] > 0
    assert "prompt" in obs  # the caller's dict is untouched
    assert policy.metadata == {"robot": "toy"}


def test_infer_batch_matches_infer_for_each_observation_in_order(policy):
    observations = [_obs(value) for value in (0.1, 0.2, 0.3)]  # 3 rows: padded to 4 inside, trimmed back
    results = policy.infer_batch(observations)
    assert len(results) == 3
    for obs, result in zip(observations, results, strict=True):
        np.testing.assert_allclose(result["actions"], policy.infer(obs)["actions"], rtol=1e-6)
        np.testing.assert_array_equal(result["state"], obs["state"])


def test_infer_batch_runs_differently_shaped_observations_in_separate_calls(policy):
    small, large = _obs(1.0), _obs(2.0)
    large["image"]["base_0_rgb"] = np.full((6, 6, 3), 2.0, np.float32)  # cannot be stacked with 4x4 images
    results = policy.infer_batch([small, large, _obs(3.0)])
    for obs, result in zip([small, large, _obs(3.0)], results, strict=True):
        np.testing.assert_allclose(result["actions"], _expected_actions(obs), rtol=1e-6)


def test_infer_batch_raises_on_an_observation_the_transforms_reject(policy):
    broken = _obs(1.0)
    del broken["prompt"]
    with pytest.raises(KeyError, match="prompt"):
        policy.infer_batch([_obs(1.0), broken])


def test_sample_kwargs_the_model_does_not_take_are_refused_when_the_policy_is_made():
    with pytest.raises(
        ValueError,
        match=r"sample_kwargs: \['num_steps'\] are not options of LinearModel.sample_actions; "
        r"expected some of \['offset'\]",
    ):
        _policy.Policy(LinearModel(), sample_kwargs={"num_steps": 10, "offset": 1.0})


class TokenModel(_model.BaseModel):
    """Samples like pi0-FAST: token ids `[b, steps]` as floats (here the state's second entry, repeated)."""

    def __init__(self) -> None:
        super().__init__(action_dim=ACTION_DIM, action_horizon=HORIZON, max_token_len=4)

    def compute_loss(self, rng, observation, actions, *, train=False):
        raise NotImplementedError

    def sample_actions(self, rng, observation, *, max_decoding_steps: int = 5):
        return jnp.repeat(observation.state[:, 1:2], max_decoding_steps, axis=1)


def _decode_tokens(data: dict) -> dict:
    """Stands in for ExtractFASTActions: one observation's tokens `[steps]` → an action chunk."""
    tokens = np.asarray(data["actions"])
    assert tokens.shape == (7,)
    return {**data, "actions": np.full((HORIZON, ACTION_DIM), tokens[0])}


def test_token_outputs_are_split_per_observation_before_the_output_transforms():
    policy = _policy.Policy(
        TokenModel(),
        transforms=[_drop_prompt],
        output_transforms=[_decode_tokens],
        sample_kwargs={"max_decoding_steps": 7},
    )
    observations = [_obs(value) for value in (1.0, 2.0, 3.0)]
    results = policy.infer_batch(observations)
    for obs, result in zip(observations, results, strict=True):
        np.testing.assert_array_equal(result["actions"], np.full((HORIZON, ACTION_DIM), obs["state"][1]))


def test_recorder_writes_each_step_inputs_and_outputs_atomically(policy, tmp_path):
    recorder = _policy.PolicyRecorder(policy, tmp_path / "records")
    first = recorder.infer(_obs(1.0))
    recorder.infer(_obs(2.0))
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == ["step_0.npz", "step_1.npz"]
    with np.load(tmp_path / "records" / "step_0.npz") as saved:
        np.testing.assert_array_equal(saved["inputs/state"], _obs(1.0)["state"])
        np.testing.assert_array_equal(saved["outputs/actions"], first["actions"])
        assert str(saved["inputs/prompt"]) == "unused"
        assert "outputs/policy_timing/infer_ms" in saved
    assert recorder.metadata == {"robot": "toy"}


def test_recorded_steps_and_their_folder_are_as_readable_as_plain_writes_make_them(policy, tmp_path):
    with file_modes.umask():
        recorder = _policy.PolicyRecorder(policy, tmp_path / "records")
        recorder.infer(_obs(1.0))
    assert file_modes.unexpected_modes(tmp_path / "records") == {}
    assert [p.name for p in (tmp_path / "records").iterdir()] == ["step_0.npz"]


def test_recorder_batches_like_the_policy_and_records_each_observation_as_a_step(policy, tmp_path):
    recorder = _policy.PolicyRecorder(policy, tmp_path / "records")
    observations = [_obs(value) for value in (1.0, 2.0, 3.0)]
    results = recorder.infer_batch(observations)
    # One batched model call: every result carries that call's time.
    assert len({result["policy_timing"]["infer_ms"] for result in results}) == 1
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == [f"step_{i}.npz" for i in range(3)]
    for step, (obs, result) in enumerate(zip(observations, results, strict=True)):
        np.testing.assert_allclose(result["actions"], _expected_actions(obs), rtol=1e-6)
        with np.load(tmp_path / "records" / f"step_{step}.npz") as saved:
            np.testing.assert_array_equal(saved["inputs/state"], obs["state"])
            np.testing.assert_array_equal(saved["outputs/actions"], result["actions"])
    recorder.infer(_obs(4.0))  # single calls carry on the numbering
    assert (tmp_path / "records" / "step_3.npz").exists()


def test_recorder_of_a_policy_without_infer_batch_records_one_call_per_observation(tmp_path):
    class OneAtATime(_policy.BasePolicy):
        def __init__(self) -> None:
            self.calls = 0

        def infer(self, obs: dict) -> dict:
            self.calls += 1
            return {"actions": obs["state"] * 2}

    wrapped = OneAtATime()
    recorder = _policy.PolicyRecorder(wrapped, tmp_path / "records")
    results = recorder.infer_batch([_obs(1.0), _obs(2.0)])
    assert wrapped.calls == 2
    np.testing.assert_array_equal(results[1]["actions"], _obs(2.0)["state"] * 2)
    with np.load(tmp_path / "records" / "step_1.npz") as saved:
        np.testing.assert_array_equal(saved["outputs/actions"], results[1]["actions"])


def test_server_batching_stays_on_when_recording(policy, tmp_path):
    recorder = _policy.PolicyRecorder(policy, tmp_path / "records")
    batcher = batching.InferenceBatcher(recorder, max_batch_size=4, max_wait_ms=0, expected_concurrency=lambda: 4)
    assert batcher.max_batch_size == 4
