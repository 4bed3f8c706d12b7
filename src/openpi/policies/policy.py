"""Policy: a model plus the transforms that turn robot observations into model inputs and actions back."""

from __future__ import annotations

from collections.abc import Sequence
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


class Policy(_base_policy.BasePolicy):
    """Runs `model.sample_actions` on observations of one robot.

    `infer(obs)` applies the input `transforms` to one (unbatched) observation, adds a batch axis, samples, removes
    the batch axis and applies the `output_transforms` to `{"state", "actions"}`. What the model samples is an action
    chunk `[horizon, dim]` (pi0, pi0.5) or generated token ids `[steps]` (pi0-FAST), which the output transforms turn
    into actions. `infer_batch` does the same for many observations with one model call per group of equally shaped
    inputs (batches are padded to a power of two so that only a few sizes are ever compiled). Outputs carry
    `policy_timing.infer_ms`: the model call's time, measured once its result is ready on the device.

    `sample_kwargs` go to every `sample_actions` call (pi0 / pi0.5: `num_steps`; pi0-FAST: `max_decoding_steps`,
    `temperature`); names the model's sampler does not take are refused here, not at the first request.
    `infer(obs, noise=...)` starts a flow model's sampling from the given noise (`[horizon, dim]` or
    `[1, horizon, dim]`) instead of a random draw.
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
        self._takes_noise = "noise" in inspect.signature(model.sample_actions).parameters
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
        if noise is None:
            return self.infer_batch([obs])[0]
        if not self._takes_noise:
            raise ValueError(f"noise: {self._model_name}.sample_actions starts from no noise; expected None")
        noise = np.asarray(noise)
        outputs, infer_ms = self._sample([self._input_transform(jax.tree.map(lambda x: x, obs))], noise=noise)
        result = self._output_transform(outputs[0])
        result["policy_timing"] = {"infer_ms": infer_ms}
        return result

    def infer_batch(self, observations: Sequence[dict]) -> list[dict]:
        """Like `infer` for each observation, sharing model calls; results come back in the input order."""
        # Copy the containers so that transforms never modify the caller's dicts.
        inputs = [self._input_transform(jax.tree.map(lambda x: x, obs)) for obs in observations]
        groups: dict[tuple, list[int]] = {}
        for index, item in enumerate(inputs):
            groups.setdefault(_signature(item), []).append(index)
        results: list[dict | None] = [None] * len(inputs)
        for indices in groups.values():
            outputs, infer_ms = self._sample([inputs[i] for i in indices])
            for index, output in zip(indices, outputs, strict=True):
                result = self._output_transform(output)
                result["policy_timing"] = {"infer_ms": infer_ms}
                results[index] = result
        return results

    def _sample(self, inputs: list[dict], noise: np.ndarray | None = None) -> tuple[list[dict], float]:
        """One model call for equally shaped inputs (and, for one input, its sampling `noise`); returns per-input
        `{"state", "actions"}` (the model's output row: an action chunk or token ids) and the call's ms."""
        padded_size = 1 << (len(inputs) - 1).bit_length()
        rows = inputs + [inputs[-1]] * (padded_size - len(inputs))
        batch = jax.tree.map(lambda *leaves: jnp.asarray(np.stack(leaves)), *rows)
        call_kwargs = {} if noise is None else {"noise": jnp.asarray(noise[None] if noise.ndim == 2 else noise)}
        self._rng, sample_rng = jax.random.split(self._rng)
        start = time.monotonic()
        actions = self._sample_actions(sample_rng, _model.Observation.from_dict(batch), **call_kwargs)
        actions = np.asarray(jax.block_until_ready(actions))
        infer_ms = (time.monotonic() - start) * 1000
        states = np.asarray(batch["state"])
        return [{"state": states[i], "actions": actions[i]} for i in range(len(inputs))], infer_ms


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
    """Wraps a policy and saves every step's inputs and outputs to `record_dir/step_<n>.npz`.

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
        flat = _transforms.flatten_dict({"inputs": obs, "outputs": results})
        arrays = {key: np.asarray(value) for key, value in flat.items() if value is not None}
        path = self._record_dir / f"step_{self._step}.npz"
        with _fileio.atomic_write(path) as f:
            np.savez(f, **arrays)
        self._step += 1
        return results

    def reset(self) -> None:
        self._policy.reset()
