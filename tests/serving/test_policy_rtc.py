"""Real-time chunking through Policy: the optional observation keys `prev_actions`, `inference_delay` and
`execution_horizon` on debug-size pi0 / pi0.5 / pi0-FAST models behind the ALOHA transforms (joint flips, gripper
conversion, delta actions, normalization, padding), as the server runs them.

(Policy tests live in tests/serving; see test_policy_runtime.py.)
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import re

import jax
import numpy as np
import pytest

from models import test_pi0
from openpi import transforms
from openpi.models import model as _model
from openpi.policies import aloha_policy
from openpi.policies import policy as _policy
from openpi.policies import policy_config
from openpi.policies import robots
from openpi.shared import normalize
from openpi.training import config as _config

HORIZON = 6
PI0 = dataclasses.replace(_config.DEBUG_MODEL, action_horizon=HORIZON)
# pi0.5 trained with training-time RTC: its sampler conditions on the prefix instead of guiding.
PI05_PREFIX = dataclasses.replace(
    _config.DEBUG_PI05_MODEL, action_horizon=HORIZON, max_token_len=200, training_rtc_max_delay=3
)


def _norm_stats() -> dict[str, normalize.NormStats]:
    rng = np.random.default_rng(7)
    return {
        key: normalize.NormStats(mean=rng.normal(size=14), std=rng.uniform(0.5, 2.0, size=14))
        for key in ("state", "actions")
    }


@functools.cache
def _policy_of(model_config: _model.BaseModelConfig) -> _policy.Policy:
    """The ALOHA policy of a debug-size model (random params, none zero: a fresh pi0.5's zero-initialised adaRMS
    gates would keep its action tokens from seeing each other): the original's joint and gripper conversion, deltas
    on the joints, z-score normalization, the offline debug tokenizer, 2 flow steps."""
    model = test_pi0.tiny_model(model_config)
    return policy_config.create_policy(
        policy_config.PolicyConfig(
            model=model,
            norm_stats=_norm_stats(),
            data_transforms=aloha_policy.ALOHA.data_transforms(
                model_config.action_dim, model_config.model_type, delta_actions=True, adapt_to_pi=True
            ),
            model_transforms=_config.ModelTransformFactory(tokenizer="debug")(model_config),
            sample_kwargs={"num_steps": 2},
        )
    )


def _obs(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "state": rng.uniform(0.2, 0.8, size=14),
        "images": {"cam_high": rng.integers(0, 256, (3, 48, 64), dtype=np.uint8)},
        "prompt": "transfer the cube",
    }


def _prev_actions(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(100 + seed).uniform(0.2, 0.8, size=(count, 14))


def _noise(model_config, batch_size: int = 1) -> np.ndarray:
    shape = (batch_size, model_config.action_horizon, model_config.action_dim)
    return np.random.default_rng(3).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(("model_config", "count", "delay"), [(PI0, 4, 3), (PI0, 9, 2), (PI05_PREFIX, 5, 3)])
def test_the_new_chunk_starts_with_the_given_previous_actions(model_config, count, delay):
    """Guided (pi0) and prefix-conditioned (pi0.5 trained for it): whatever the transforms do to the previous actions
    on the way in, the first `inference_delay` actions come back out as they were sent; the rest changes too."""
    policy = _policy_of(model_config)
    prev_actions = _prev_actions(0, count)
    obs = {**_obs(0), "prev_actions": prev_actions, "inference_delay": np.int64(delay)}
    continued = policy.infer(obs, noise=_noise(model_config)[0])["actions"]
    fresh = policy.infer(_obs(0), noise=_noise(model_config)[0])["actions"]
    assert continued.shape == fresh.shape == (HORIZON, 14)
    np.testing.assert_allclose(continued[:delay], prev_actions[:delay], atol=1e-5)
    assert np.abs(continued[delay:] - fresh[delay:]).max() > 1e-4


@pytest.mark.parametrize("model_config", [PI0, PI05_PREFIX])
def test_a_batch_mixing_observations_with_and_without_previous_actions_equals_separate_calls(model_config):
    policy = _policy_of(model_config)
    observations = [
        {**_obs(1), "prev_actions": _prev_actions(1, 5), "inference_delay": 2, "execution_horizon": 2},
        _obs(2),
        {**_obs(3), "prev_actions": _prev_actions(3, 3).tolist(), "inference_delay": 3},
    ]
    noise = _noise(model_config, batch_size=3)
    batched = policy.infer_batch(observations, noise=noise)
    # The keys do not split the batch: one model call for all three.
    assert len({result["policy_timing"]["infer_ms"] for result in batched}) == 1
    # Alone, the observation without previous actions takes the plain sampler: in the batch it continued nothing.
    for obs, row_noise, result in zip(observations, noise, batched, strict=True):
        alone = policy.infer(obs, noise=row_noise)["actions"]
        np.testing.assert_allclose(result["actions"], alone, atol=1e-4)
    # Previous actions may come as nested lists (msgpack without numpy).
    np.testing.assert_allclose(batched[2]["actions"][:3], np.asarray(observations[2]["prev_actions"]), atol=1e-5)


def test_the_callers_observation_is_left_as_it_was():
    obs = {**_obs(4), "prev_actions": _prev_actions(4, 4), "inference_delay": 1, "execution_horizon": 3}
    before = copy.deepcopy(obs)
    _policy_of(PI0).infer(obs)
    assert obs.keys() == before.keys()
    assert obs["images"].keys() == before["images"].keys()
    for key, value in transforms.flatten_dict(before).items():
        np.testing.assert_array_equal(transforms.flatten_dict(obs)[key], value)


@pytest.mark.parametrize("name", sorted(robots.ROBOTS))
def test_every_robots_transforms_leave_their_input_as_it_was(name):
    """The rule that lets Policy pass observations on without copying them: transforms return new dicts and never
    write into their input's dicts or arrays (training's `actions` path included, as prev_actions take it)."""
    robot = robots.ROBOTS[name]
    obs = robot.make_example()
    model_outputs = {"state": np.zeros(32), "actions": np.zeros((HORIZON, 32))}
    action_dim = np.asarray(robot.outputs(model_outputs)["actions"]).shape[-1]
    obs["actions"] = np.random.default_rng(0).uniform(0.2, 0.8, (HORIZON, action_dim))
    group = robot.data_transforms(32, _model.ModelType.PI0, delta_actions=robot.delta_action_mask is not None)
    stats = {
        "state": normalize.NormStats(np.ones(32), np.ones(32)),
        "actions": normalize.NormStats(np.ones(32), np.ones(32)),
    }
    inputs = transforms.compose([*group.inputs, transforms.Normalize(stats), transforms.PadStatesAndActions(32)])
    outputs = transforms.compose([transforms.Unnormalize(stats), *group.outputs])
    for transform, data in ((inputs, obs), (outputs, {"state": np.ones(32), "actions": np.ones((HORIZON, 32))})):
        before = copy.deepcopy(data)
        transform(data)
        flat, flat_before = transforms.flatten_dict(data), transforms.flatten_dict(before)
        assert flat.keys() == flat_before.keys()
        for key, value in flat_before.items():
            np.testing.assert_array_equal(flat[key], value, err_msg=f"{name}: {key} changed")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"prev_actions": np.zeros(14), "inference_delay": 0}, "prev_actions: expected a finite float array [n, robot"),
        ({"prev_actions": np.full((3, 14), np.nan), "inference_delay": 0}, "prev_actions: expected a finite float"),
        ({"prev_actions": [[0.0] * 14, [0.0] * 13], "inference_delay": 0}, "prev_actions: expected a finite float"),
        ({"prev_actions": np.zeros((3, 13)), "inference_delay": 1}, "prev_actions: the input transforms could not"),
        ({"prev_actions": np.zeros((3, 14))}, "inference_delay: required with prev_actions"),
        (
            {"prev_actions": np.zeros((3, 14)), "inference_delay": 4},
            "inference_delay: expected an int with 0 <= d <= 3",
        ),
        (
            {"prev_actions": np.zeros((9, 14)), "inference_delay": 7},
            "inference_delay: expected an int with 0 <= d <= 6",
        ),
        ({"prev_actions": np.zeros((3, 14)), "inference_delay": -1}, "inference_delay: expected an int with 0 <= d"),
        ({"prev_actions": np.zeros((3, 14)), "inference_delay": 1.0}, "inference_delay: expected an int (control"),
        ({"prev_actions": np.zeros((3, 14)), "inference_delay": True}, "inference_delay: expected an int (control"),
        (
            {"prev_actions": np.zeros((3, 14)), "inference_delay": 2, "execution_horizon": 5},
            "execution_horizon: expected an int with 0 <= s <= action_horizon - inference_delay (6 - 2), got 5",
        ),
        ({"inference_delay": 2}, "prev_actions: required with ['inference_delay']"),
        (
            {"prev_actions": np.zeros((3, 14)), "inference_delay": 1, "actions": np.zeros((3, 14))},
            "actions: not accepted beside prev_actions",
        ),
    ],
)
def test_real_time_chunking_keys_of_the_wrong_form_are_refused_by_name(keys, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _policy_of(PI0).infer({**_obs(5), **keys})


def test_an_error_of_the_observation_itself_is_not_blamed_on_prev_actions():
    obs = {**_obs(5), "prev_actions": np.zeros((3, 14)), "inference_delay": 1}
    obs["images"] = {"cam_left_wrist": obs["images"]["cam_high"]}
    with pytest.raises(ValueError, match=re.escape("images/cam_high: required")):
        _policy_of(PI0).infer(obs)


def test_absent_or_none_keys_and_an_empty_previous_chunk_sample_as_without_them():
    policy = _policy_of(PI0)
    noise = _noise(PI0)[0]
    plain = policy.infer(_obs(6), noise=noise)["actions"]
    nones = dict.fromkeys(_policy.RTC_KEYS)
    empty = {"prev_actions": np.zeros((0, 14)), "inference_delay": 0}
    for keys in (nones, empty):
        np.testing.assert_array_equal(policy.infer({**_obs(6), **keys}, noise=noise)["actions"], plain)


def test_pi0_fast_ignores_the_keys_and_says_so_once(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path))
    model_config = _config.DEBUG_FAST_MODEL
    policy = policy_config.create_policy(
        policy_config.PolicyConfig(
            model=model_config.create(jax.random.key(0)),
            norm_stats=_norm_stats(),
            data_transforms=aloha_policy.ALOHA.data_transforms(None, model_config.model_type, adapt_to_pi=False),
            model_transforms=_config.ModelTransformFactory(tokenizer="debug")(model_config),
            sample_kwargs={"max_decoding_steps": 4},
        )
    )
    keys = {"prev_actions": _prev_actions(0, 4), "inference_delay": 2, "execution_horizon": 1}
    with caplog.at_level(logging.INFO, logger=_policy.__name__):
        batched = policy.infer_batch([{**_obs(0), **keys}, _obs(1), {**_obs(1), **keys}])
    plain = policy.infer_batch([_obs(0), _obs(1)])
    np.testing.assert_array_equal(batched[0]["actions"], plain[0]["actions"])
    np.testing.assert_array_equal(batched[2]["actions"], plain[1]["actions"])
    ignored = [record for record in caplog.records if "continues no previous chunk" in record.getMessage()]
    assert len(ignored) == 1
    assert "Pi0FAST" in ignored[0].getMessage()
