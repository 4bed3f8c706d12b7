"""Policy: a model plus the transforms that turn robot observations into model inputs and actions back."""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import functools
import inspect
import logging
import os
import pathlib
import time
from typing import Any, TypeAlias

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from openpi import transforms as _transforms
from openpi.models import model as _model
from openpi.shared import fileio as _fileio
from openpi_client import base_policy as _base_policy

logger = logging.getLogger(__name__)

# The original's name for the client package's policy interface.
BasePolicy: TypeAlias = _base_policy.BasePolicy


# Optional observation keys for real-time chunking (README, the wire protocol), taken out of the observation before
# the input transforms:
# - `prev_actions` [n, robot action dim]: the actions of the chunk being executed that had not been executed when the
#   observation was taken, as the server returned them; index 0 is the action executing at observation time.
# - `inference_delay` (int, 0 <= d <= n): control steps the robot expects to pass before the new chunk takes over; the
#   new chunk's first d actions are `prev_actions[:d]`.
# - `execution_horizon` (int, optional): guided sampling pulls the new chunk towards `prev_actions` up to index
#   `action_horizon - execution_horizon`; by default over all of `prev_actions` (never past it).
# A key whose value is None counts as absent.
RTC_KEYS = ("prev_actions", "inference_delay", "execution_horizon")


@dataclasses.dataclass(frozen=True)
class _Continuation:
    """One observation's real-time chunking request, in the model's action space."""

    prev_chunk: np.ndarray  # [action_horizon, model action dim]
    inference_delay: int
    execution_horizon: int


class Policy(_base_policy.BasePolicy):
    """Runs `model.sample_actions` on observations of one robot.

    `infer(obs)` applies the input `transforms` to one (unbatched) observation, adds a batch axis, samples, removes
    the batch axis and applies the `output_transforms` to `{"state", "actions"}`. What the model samples is an action
    chunk `[horizon, dim]` (pi0, pi0.5) or generated token ids `[steps]` (pi0-FAST), which the output transforms turn
    into actions. `infer_batch` does the same for many observations with one model call per group of equally shaped
    inputs (batches are padded to a power of two so that only a few sizes are ever compiled). Outputs carry
    `policy_timing.infer_ms`: the model call's time, measured once its result is ready on the device.

    The caller's observation is never modified and never copied: transforms return new dicts and leave their input
    (dicts and arrays) as it is, the rule of `openpi.transforms` that every transform keeps.

    Real-time chunking: an observation may carry the `RTC_KEYS`. For a model whose sampler continues a previous chunk
    (pi0, pi0.5: `prev_chunk`), `prev_actions` go through the input transforms as `actions` (as training converts
    them: deltas, normalization, padding to the model's action dim), cut or padded (last action repeated) to the action
    horizon, and the new chunk starts with their first `inference_delay` actions (guided or prefix-conditioned
    sampling, as the model decides: `Pi0.sample_actions`). Observations with and without them share model calls (those
    without continue nothing: delay 0, no guidance). Models whose sampler takes no previous chunk (pi0-FAST, exported
    models) ignore the keys, logged once.

    `sample_kwargs` go to every `sample_actions` call (pi0 / pi0.5: `num_steps`, `rtc_method`, `guidance_max_weight`;
    pi0-FAST: `max_decoding_steps`, `temperature`); names the model's sampler does not take are refused here, not at
    the first request. `infer(obs, noise=...)` starts a flow model's sampling from the given noise (`[horizon, dim]`
    or `[1, horizon, dim]`) instead of a random draw; `infer_batch(observations, noise=...)` takes one per observation.
    """

    def __init__(
        self,
        model: _model.BaseModel,
        *,
        rng: jax.Array | None = None,
        transforms: Sequence[_transforms.DataTransformFn] = (),
        output_transforms: Sequence[_transforms.DataTransformFn] = (),
        sample_kwargs: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        sample_kwargs = dict(sample_kwargs or {})
        _check_sample_kwargs(model, sample_kwargs)
        self._model_name = type(model).__name__
        parameters = inspect.signature(model.sample_actions).parameters
        self._takes_noise = "noise" in parameters
        self._continues_chunks = "prev_chunk" in parameters
        self._action_shape = (model.action_horizon, model.action_dim)
        self._ignored_rtc_logged = False
        graphdef, state = nnx.split(model)

        def sample(state: nnx.State, rng: jax.Array, observation: _model.Observation, **call_kwargs) -> jax.Array:
            return nnx.merge(graphdef, state).sample_actions(rng, observation, **sample_kwargs, **call_kwargs)

        self._sample_actions = functools.partial(jax.jit(sample), state)
        self._input_transform = _transforms.compose(transforms)
        self._output_transform = _transforms.compose(output_transforms)
        self._rng = jax.random.key(0) if rng is None else rng
        self._metadata = metadata or {}

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    def infer(self, obs: dict, *, noise: np.ndarray | None = None) -> dict:
        if noise is not None:
            noise = np.asarray(noise)
            noise = noise[None] if noise.ndim == 2 else noise
        return self.infer_batch([obs], noise=noise)[0]

    def infer_batch(self, observations: Sequence[dict], *, noise: np.ndarray | None = None) -> list[dict]:
        """Like `infer` for each observation, sharing model calls; results come back in the input order. `noise`
        (flow models): the sampling noise of each observation, `[len(observations), horizon, dim]`."""
        if noise is not None:
            if not self._takes_noise:
                raise ValueError(f"noise: {self._model_name}.sample_actions starts from no noise; expected None")
            noise = np.asarray(noise)
            if noise.ndim != 3 or len(noise) != len(observations):
                raise ValueError(
                    f"noise: expected one [horizon, dim] array per observation, shape ({len(observations)}, horizon, "
                    f"dim); got {noise.shape}"
                )
        prepared = [self._prepare(obs) for obs in observations]
        groups: dict[tuple, list[int]] = {}
        for index, (inputs, _) in enumerate(prepared):
            groups.setdefault(_signature(inputs), []).append(index)
        results: list[dict | None] = [None] * len(prepared)
        for indices in groups.values():
            outputs, infer_ms = self._sample(
                [prepared[i][0] for i in indices],
                [prepared[i][1] for i in indices],
                None if noise is None else noise[indices],
            )
            for index, output in zip(indices, outputs, strict=True):
                result = self._output_transform(output)
                result["policy_timing"] = {"infer_ms": infer_ms}
                results[index] = result
        return results

    def _prepare(self, obs: dict) -> tuple[dict, _Continuation | None]:
        """The model inputs of one observation, and the previous chunk it asks to continue (None if none)."""
        rtc_values = {key: obs[key] for key in RTC_KEYS if obs.get(key) is not None}
        if any(key in obs for key in RTC_KEYS):
            obs = {key: value for key, value in obs.items() if key not in RTC_KEYS}
        if rtc_values and not self._continues_chunks:
            if not self._ignored_rtc_logged:
                logger.info(
                    "%s.sample_actions continues no previous chunk: ignoring the observation keys %s",
                    self._model_name,
                    sorted(rtc_values),
                )
                self._ignored_rtc_logged = True
            rtc_values = {}
        request = _check_rtc_values(rtc_values, self._action_shape[0]) if rtc_values else None
        if request is None:
            return self._input_transform(obs), None
        prev_actions, delay, execution_horizon = request
        if "actions" in obs:
            raise ValueError("actions: not accepted beside prev_actions (which go through the input transforms as it)")
        try:
            inputs = self._input_transform({**obs, "actions": prev_actions})
        except Exception as error:
            self._input_transform(obs)  # an error of the observation itself is raised as such
            raise ValueError(
                f"prev_actions: the input transforms could not convert them ({type(error).__name__}: {error}); "
                "expected [n, robot action dim] in the action space the server returns"
            ) from error
        if "actions" not in inputs:
            raise ValueError("prev_actions: the input transforms dropped them (a repack transform without `actions`?)")
        prev_chunk = np.asarray(inputs["actions"], np.float32)
        if prev_chunk.shape != self._action_shape:
            raise ValueError(
                f"prev_actions: the input transforms made them {prev_chunk.shape}, expected {self._action_shape} "
                "(action horizon, model action dim): do they pad actions to the model's action dim?"
            )
        inputs = {key: value for key, value in inputs.items() if key != "actions"}
        return inputs, _Continuation(prev_chunk, delay, execution_horizon)

    def _sample(
        self, inputs: list[dict], continuations: list[_Continuation | None], noise: np.ndarray | None
    ) -> tuple[list[dict], float]:
        """One model call for equally shaped inputs (with their previous chunks and sampling `noise`, if any);
        returns per-input `{"state", "actions"}` (the model's output row: an action chunk or token ids) and the
        call's ms."""
        padding = (1 << (len(inputs) - 1).bit_length()) - len(inputs)
        rows = inputs + [inputs[-1]] * padding
        batch = jax.tree.map(lambda *leaves: jnp.asarray(np.stack(leaves)), *rows)
        call_kwargs = {}
        if noise is not None:
            call_kwargs["noise"] = jnp.asarray(np.concatenate([noise, np.repeat(noise[-1:], padding, axis=0)]))
        if any(continuation is not None for continuation in continuations):
            # Rows without a previous chunk continue nothing: no delay, and no overlap to guide (weight 0 throughout).
            horizon = self._action_shape[0]
            nothing = _Continuation(np.zeros(self._action_shape, np.float32), 0, horizon)
            rows = [nothing if c is None else c for c in continuations + [continuations[-1]] * padding]
            call_kwargs["prev_chunk"] = jnp.asarray(np.stack([row.prev_chunk for row in rows]))
            call_kwargs["inference_delay"] = jnp.asarray([row.inference_delay for row in rows], jnp.int32)
            call_kwargs["execution_horizon"] = jnp.asarray([row.execution_horizon for row in rows], jnp.int32)
        self._rng, sample_rng = jax.random.split(self._rng)
        start = time.monotonic()
        actions = self._sample_actions(sample_rng, _model.Observation.from_dict(batch), **call_kwargs)
        actions = np.asarray(jax.block_until_ready(actions))
        infer_ms = (time.monotonic() - start) * 1000
        states = np.asarray(batch["state"])
        return [{"state": states[i], "actions": actions[i]} for i in range(len(inputs))], infer_ms


def _check_rtc_values(values: dict[str, Any], action_horizon: int) -> tuple[np.ndarray, int, int] | None:
    """Checks an observation's real-time chunking values; returns `prev_actions` cut or padded (last action repeated)
    to `action_horizon`, still in the robot's space, the delay and the execution horizon; None when no previous
    action is left to continue."""
    if "prev_actions" not in values:
        raise ValueError(
            f"prev_actions: required with {sorted(values)}; expected a float array [n, robot action dim] of the "
            "actions not executed yet when the observation was taken"
        )
    prev_actions = values["prev_actions"]
    array = _as_array(prev_actions)
    if array is None or array.ndim != 2 or array.dtype.kind not in "fiu" or not np.all(np.isfinite(array)):
        raise ValueError(
            "prev_actions: expected a finite float array [n, robot action dim]: the actions of the executing chunk "
            f"not executed yet when the observation was taken, index 0 executing then; got {_describe(prev_actions)}"
        )
    if "inference_delay" not in values:
        raise ValueError("inference_delay: required with prev_actions; expected an int, 0 <= d <= len(prev_actions)")
    count = min(len(array), action_horizon)
    delay = _control_steps(values["inference_delay"], "inference_delay")
    if not 0 <= delay <= count:
        raise ValueError(
            f"inference_delay: expected an int with 0 <= d <= {count} (the prev_actions given, at most the action "
            f"horizon {action_horizon}), got {delay}"
        )
    # Guidance covers the previous actions given, never the padding after them.
    execution_horizon = action_horizon - count
    if "execution_horizon" in values:
        asked = _control_steps(values["execution_horizon"], "execution_horizon")
        if not 0 <= asked <= action_horizon - delay:
            raise ValueError(
                f"execution_horizon: expected an int with 0 <= s <= action_horizon - inference_delay "
                f"({action_horizon} - {delay}), got {asked}"
            )
        execution_horizon = max(execution_horizon, asked)
    if count == 0:
        return None
    array = array[:count]
    padded = np.concatenate([array, np.repeat(array[-1:], action_horizon - count, axis=0)])
    return padded, delay, execution_horizon


def _control_steps(value: Any, name: str) -> int:
    """An int number of control steps: a Python or numpy integer (a 0-d integer array too), not a bool."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}: expected an int (control steps), got {_describe(value)}")
    return int(value)


def _as_array(value: Any) -> np.ndarray | None:
    """`value` as an array if it is an array or a (rectangular) nest of lists; else None."""
    if not isinstance(value, np.ndarray | list | tuple):
        return None
    try:
        return np.asarray(value)
    except ValueError:  # ragged lists
        return None


def _describe(value: Any) -> str:
    array = _as_array(value)
    if array is not None:
        return f"{type(value).__name__} of shape {array.shape} and dtype {array.dtype}"
    return f"{type(value).__name__} {value!r}"[:200]


def _check_sample_kwargs(model: _model.BaseModel, sample_kwargs: dict[str, Any]) -> None:
    """Raises ValueError naming the options the model's `sample_actions` does not take (e.g. pi0's `num_steps` for a
    pi0-FAST model)."""
    parameters = inspect.signature(model.sample_actions).parameters.values()
    if any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters):
        return
    accepted = [parameter.name for parameter in parameters if parameter.kind == parameter.KEYWORD_ONLY]
    unknown = sorted(set(sample_kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"sample_kwargs: {unknown} are not options of {type(model).__name__}.sample_actions; expected some of "
            f"{accepted}"
        )


def _signature(tree: dict) -> tuple:
    """What must agree for inputs to share a batch: the tree's paths, leaf shapes and dtypes."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return (treedef, *((np.shape(leaf), np.asarray(leaf).dtype.str) for leaf in leaves))


class PolicyRecorder(_base_policy.BasePolicy):
    """Wraps a policy and saves every step's inputs and outputs to `record_dir/step_<n>.npz` (each observation of a
    batch is a step of its own).

    Keys are `inputs/<path>` and `outputs/<path>` with nested dicts joined by `/`; each file is written to a
    temporary name and renamed, so a crash never leaves a partial step behind.
    """

    def __init__(self, policy: _base_policy.BasePolicy, record_dir: str | os.PathLike) -> None:
        self._policy = policy
        self._record_dir = pathlib.Path(record_dir)
        self._record_dir.mkdir(parents=True, exist_ok=True)
        self._step = 0
        logger.info("Recording policy steps to %s", self._record_dir)

    @property
    def metadata(self) -> dict[str, Any]:
        return getattr(self._policy, "metadata", {})

    def infer(self, obs: dict) -> dict:
        results = self._policy.infer(obs)
        self._record(obs, results)
        return results

    def infer_batch(self, observations: Sequence[dict]) -> list[dict]:
        """Like `infer` for each observation, one step file per observation in order; one batched call when the
        wrapped policy has `infer_batch` (the server's batching stays on with `--record`)."""
        infer_batch = getattr(self._policy, "infer_batch", None)
        if infer_batch is None:
            results = [self._policy.infer(obs) for obs in observations]
        else:
            results = infer_batch(observations)
        for obs, result in zip(observations, results, strict=True):
            self._record(obs, result)
        return results

    def _record(self, obs: dict, results: dict) -> None:
        flat = _transforms.flatten_dict({"inputs": obs, "outputs": results})
        arrays = {key: np.asarray(value) for key, value in flat.items() if value is not None}
        path = self._record_dir / f"step_{self._step}.npz"
        with _fileio.atomic_write(path) as f:
            np.savez(f, **arrays)
        self._step += 1

    def reset(self) -> None:
        self._policy.reset()
