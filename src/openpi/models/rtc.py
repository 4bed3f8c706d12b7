"""Real-time chunking (Black, Galliker, Levine 2025, arXiv 2506.07339): inference-time guidance that makes a new
action chunk continue the previous one, so that chunks join without a jump while the robot keeps moving.

While chunk k executes, chunk k+1 is sampled. Its first ``d`` actions (the inference delay, in control steps) are
already fixed: the robot executes chunk k's actions while the new chunk is computed. The rest of the overlap with
chunk k, up to ``H - s`` (``s`` the execution horizon), is softly guided towards it with decaying weights; the flow
sampler adds a pseudo-inverse guidance (PiGDM) term per denoising step.

Time convention: the paper integrates ``tau`` from 0 (noise) to 1 (data) with ``A_tau = tau * A + (1 - tau) * eps``
and velocity ``A - eps``; pi0 integrates ``t = 1 - tau`` from 1 (noise) to 0 (data) with velocity ``noise - actions``,
the negated one. The predicted clean chunk ``A_tau + (1 - tau) * v_paper`` is therefore ``x_t - t * v``, and the
paper's guided velocity ``v_paper + w * g`` becomes ``v - w * g`` here.

Training-time action conditioning (Black, Ren, Equi, Levine 2025, arXiv 2512.05964), the "prefix" method: the model
is trained with a random delay ``d`` per example whose first ``d`` actions are given clean (flow time 0 on those
tokens, no loss on them), so at inference it conditions on the frozen prefix directly: the prefix tokens stay the
previous chunk's actions at time 0 while the others are denoised. No guidance, no backward pass: a sampling step
costs what an unconditioned one does.
"""

from collections.abc import Callable
from typing import Literal, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from openpi.shared import array_typing as at

# How the guidance weight falls over the soft part of the overlap (the paper's Eq. 5 is "exp"): "linear" without
# the exponential, "ones" the whole overlap at full weight, "zeros" only the frozen prefix.
PrefixAttentionSchedule: TypeAlias = Literal["exp", "linear", "ones", "zeros"]
SCHEDULES: tuple[str, ...] = ("exp", "linear", "ones", "zeros")

# Steps, given as an int or one per example.
Steps: TypeAlias = int | at.Int[at.Array, " b"]

# How a sampler continues the previous chunk: "guided" (inference-time guidance, any flow model) or "prefix" (the
# frozen prefix given clean at time 0: for models trained with training-time conditioning).
Method: TypeAlias = Literal["guided", "prefix"]
METHODS: tuple[str, ...] = ("guided", "prefix")

# The training-time delay distribution over 0..max_delay: "uniform", or "exp" with P(d) proportional to
# exp(-2 d / max_delay) (short delays, the common case, more often; the longest still 1/e^2 as likely as none).
DelayDistribution: TypeAlias = Literal["uniform", "exp"]
DELAY_DISTRIBUTIONS: tuple[str, ...] = ("uniform", "exp")


def prefix_weights(
    inference_delay: Steps, execution_horizon: Steps, action_horizon: int, schedule: PrefixAttentionSchedule = "exp"
) -> at.Float[at.Array, "*b h"]:
    """Eq. 5: weight 1 on the first ``d`` actions, decaying as ``c_i * (e^c_i - 1) / (e - 1)`` with
    ``c_i = (H - s - i) / (H - s - d + 1)`` for ``d <= i < H - s``, and 0 from ``H - s`` on."""
    index = jnp.arange(action_horizon)
    end = action_horizon - jnp.asarray(execution_horizon)[..., None]
    delay = jnp.minimum(jnp.asarray(inference_delay)[..., None], end)
    if schedule == "ones":
        weights = jnp.ones_like(index, dtype=jnp.float32)
    elif schedule == "zeros":
        weights = (index < delay).astype(jnp.float32)
    elif schedule in ("linear", "exp"):
        # c_i >= 1 on the frozen prefix, clipped to 1 there (where the exponential form is 1 as well).
        weights = jnp.clip((end - index) / (end - delay + 1), 0.0, 1.0)
        if schedule == "exp":
            weights = weights * jnp.expm1(weights) / (jnp.e - 1)
    else:
        raise ValueError(f"prefix_attention_schedule: expected one of {SCHEDULES}, got {schedule!r}")
    return jnp.where(index < end, weights, 0.0)


def guidance_weight(time: at.Float[at.Array, ""], max_weight: float) -> at.Float[at.Array, ""]:
    """PiGDM weight ``min(beta, (1 - tau) / (tau * r_tau^2))``, ``r_tau^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2)``,
    at pi0 time ``t = 1 - tau``. At pure noise (t=1) it is infinite, so beta."""
    tau = 1.0 - time
    r_squared = (1 - tau) ** 2 / (tau**2 + (1 - tau) ** 2)
    return jnp.minimum(max_weight, (1 - tau) / (tau * r_squared))


def guided_velocity(
    velocity_fn: Callable[[at.Float[at.Array, "b h d"]], at.Float[at.Array, "b h d"]],
    x_t: at.Float[at.Array, "b h d"],
    time: at.Float[at.Array, ""],
    prev_chunk: at.Float[at.Array, "b h d"],
    weights: at.Float[at.Array, "b h"],
    max_weight: float,
) -> at.Float[at.Array, "b h d"]:
    """The velocity at ``x_t`` plus the guidance pulling the predicted clean chunk towards ``prev_chunk`` (Alg. 1).

    The weighted error of the clean chunk ``x_t - t * v(x_t)`` is pulled back to ``x_t`` through a vector-Jacobian
    product, so the model's own sensitivity decides how ``x_t`` moves to close it.
    """

    def clean_chunk(x):
        velocity = velocity_fn(x)
        return x - time * velocity, velocity

    predicted, vjp_fn, velocity = jax.vjp(clean_chunk, x_t, has_aux=True)
    (correction,) = vjp_fn((prev_chunk - predicted) * weights[..., None])
    return velocity - guidance_weight(time, max_weight) * correction


def check_inputs(
    prev_chunk: at.Array, inference_delay: Steps, execution_horizon: Steps, actions_shape: tuple[int, int, int]
) -> None:
    """Raises on shapes or (where known before tracing) values that real-time chunking cannot use."""
    batch_size, action_horizon, _ = actions_shape
    if tuple(prev_chunk.shape) != tuple(actions_shape):
        raise ValueError(
            f"prev_chunk: expected shape {tuple(actions_shape)} (batch, action_horizon, action_dim), the previous "
            f"chunk re-indexed so that index 0 executes when the new chunk starts; got {tuple(prev_chunk.shape)}"
        )
    steps = {}
    for name, value in (("inference_delay", inference_delay), ("execution_horizon", execution_horizon)):
        shape = jnp.shape(value)
        if shape not in ((), (batch_size,)) or not jnp.issubdtype(jnp.result_type(value), jnp.integer):
            raise ValueError(f"{name}: expected an int or integers of shape ({batch_size},), got {value!r}")
        if not isinstance(value, jax.core.Tracer):
            steps[name] = np.asarray(value)
    if "execution_horizon" in steps and np.any(
        (steps["execution_horizon"] < 0) | (steps["execution_horizon"] > action_horizon)
    ):
        raise ValueError(f"execution_horizon: expected 0 <= s <= {action_horizon}, got {execution_horizon}")
    if "inference_delay" in steps:
        end = action_horizon - steps.get("execution_horizon", 0)
        if np.any((steps["inference_delay"] < 0) | (steps["inference_delay"] > end)):
            raise ValueError(
                f"inference_delay: expected 0 <= d <= action_horizon - execution_horizon "
                f"({action_horizon} - {execution_horizon}), got {inference_delay}"
            )


def check_training_fields(max_delay: int, distribution: str, action_horizon: int) -> None:
    """Raises on a training-time delay setting a model cannot train with."""
    if not 0 <= max_delay < action_horizon:
        raise ValueError(
            f"training_rtc_max_delay: expected 0 (off) <= d < action_horizon ({action_horizon}), got {max_delay}"
        )
    if distribution not in DELAY_DISTRIBUTIONS:
        raise ValueError(
            f"training_rtc_delay_distribution: expected one of {DELAY_DISTRIBUTIONS}, got {distribution!r}"
        )


def delay_probabilities(max_delay: int, distribution: DelayDistribution) -> np.ndarray:
    """P(d) for d = 0..max_delay under ``distribution`` (see ``DelayDistribution``)."""
    delays = np.arange(max_delay + 1)
    if distribution == "uniform":
        weights = np.ones(max_delay + 1)
    elif distribution == "exp":
        weights = np.exp(-2.0 * delays / max(max_delay, 1))
    else:
        raise ValueError(
            f"training_rtc_delay_distribution: expected one of {DELAY_DISTRIBUTIONS}, got {distribution!r}"
        )
    return weights / weights.sum()


def sample_delays(
    rng: at.KeyArrayLike, batch_shape: tuple[int, ...], max_delay: int, distribution: DelayDistribution
) -> at.Int[at.Array, "*b"]:
    """One training-time delay per example, drawn from ``delay_probabilities``."""
    logits = jnp.log(jnp.asarray(delay_probabilities(max_delay, distribution), jnp.float32))
    return jax.random.categorical(rng, logits, shape=batch_shape)


def prefix_mask(inference_delay: Steps, action_horizon: int) -> at.Bool[at.Array, "*b h"]:
    """True on the first ``inference_delay`` actions of a chunk."""
    return jnp.arange(action_horizon) < jnp.asarray(inference_delay)[..., None]


def postfix_loss(loss: at.Float[at.Array, "*b h"], prefix: at.Bool[at.Array, "*b h"]) -> at.Float[at.Array, "*b h"]:
    """The per-action loss with the given prefix taken out: zero there, the rest scaled by ``h / (h - d)`` so that
    each example's mean over the chunk is its mean over the actions it predicts (and stays comparable to a loss
    trained without a prefix)."""
    horizon = loss.shape[-1]
    predicted = jnp.sum(~prefix, axis=-1, keepdims=True)
    return jnp.where(prefix, 0.0, loss) * (horizon / predicted)
