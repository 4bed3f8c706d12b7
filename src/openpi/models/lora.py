"""Low-rank adapters (LoRA) for the Gemma einsums and feed-forward layers.

A LoRA weight adds ``(x @ A) @ B * scaling`` to a frozen base weight. ``B`` starts at zero, so a freshly
initialised LoRA model computes exactly what its base model computes.
"""

from collections.abc import Sequence
import dataclasses
import string

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from openpi.models import matmul
from openpi.shared import array_typing as at
from openpi.shared.nnx_utils import PathRegex

# A matrices start small and random, B matrices at zero.
DEFAULT_A_INIT = jax.nn.initializers.normal(stddev=0.01)


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """Rank and scaling of one adapter; ``axes`` are the (input, output) axes of the adapted weight."""

    rank: int
    alpha: float = 1.0
    # Initialiser of the A matrices (B starts at zero).
    init_fn: jax.nn.initializers.Initializer = DEFAULT_A_INIT
    rslora: bool = False
    axes: tuple[int, int] = (-2, -1)
    label: str = "L"

    @property
    def scaling_value(self) -> float:
        return self.alpha / self.rank**0.5 if self.rslora else self.alpha / self.rank


def _lora_shapes(shape: tuple[int, ...], config: LoRAConfig) -> tuple[list[int], list[int]]:
    shape_a, shape_b = list(shape), list(shape)
    shape_a[config.axes[1]] = config.rank
    shape_b[config.axes[0]] = config.rank
    return shape_a, shape_b


def _lora_equations(eqn: str, config: LoRAConfig) -> tuple[str, str]:
    """Splits ``x,w->y`` into ``x,A->z`` and ``z,B->y``: A replaces w's output axis, B its input axis."""
    inputs, out = eqn.replace(" ", "").split("->")
    x_spec, w_spec = inputs.split(",")
    w_in, w_out = w_spec[config.axes[0]], w_spec[config.axes[1]]
    if config.label in eqn:
        raise ValueError(f"lora label {config.label!r} already used in equation {eqn!r}")
    mid = out.replace(w_out, config.label)
    eqn_a = f"{x_spec},{w_spec.replace(w_out, config.label)}->{mid}"
    eqn_b = f"{mid},{w_spec.replace(w_in, config.label)}->{out}"
    return eqn_a, eqn_b


class Einsum(nnx.Module):
    """A weight applied with an einsum equation, with an optional LoRA adapter (``lora_a``/``lora_b``)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        *,
        init_fn: jax.nn.initializers.Initializer,
        lora_config: LoRAConfig | None,
        rngs: nnx.Rngs,
    ):
        self.lora_config = lora_config
        self.w = nnx.Param(init_fn(rngs.params(), shape, jnp.float32))
        if lora_config is not None:
            shape_a, shape_b = _lora_shapes(shape, lora_config)
            self.lora_a = nnx.Param(lora_config.init_fn(rngs.params(), shape_a, jnp.float32))
            self.lora_b = nnx.Param(jnp.zeros(shape_b, jnp.float32))

    def __call__(self, eqn: str, x: at.Array) -> at.Array:
        dtype = x.dtype
        result = matmul.einsum(eqn, x, self.w[...].astype(dtype))
        if self.lora_config is not None:
            eqn_a, eqn_b = _lora_equations(eqn, self.lora_config)
            low_rank = matmul.einsum(eqn_a, x, self.lora_a[...].astype(dtype))
            low_rank = matmul.einsum(eqn_b, low_rank, self.lora_b[...].astype(dtype))
            result = result + low_rank * self.lora_config.scaling_value
        return result


class FeedForward(nnx.Module):
    """Gemma's gated GELU MLP: ``linear(gelu(x @ gate[0]) * (x @ gate[1]))``, with optional LoRA."""

    def __init__(self, features: int, hidden_dim: int, *, lora_config: LoRAConfig | None, rngs: nnx.Rngs):
        self.lora_config = lora_config
        gating_shape = (2, features, hidden_dim)
        linear_shape = (hidden_dim, features)
        self.gating_einsum = nnx.Param(
            jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))(
                rngs.params(), gating_shape, jnp.float32
            )
        )
        self.linear = nnx.Param(
            jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1)(rngs.params(), linear_shape, jnp.float32)
        )
        if lora_config is not None:
            config = dataclasses.replace(lora_config, axes=(-2, -1))
            for name, shape in (("gating_einsum", gating_shape), ("linear", linear_shape)):
                shape_a, shape_b = _lora_shapes(shape, config)
                setattr(self, f"{name}_lora_a", nnx.Param(config.init_fn(rngs.params(), shape_a, jnp.float32)))
                setattr(self, f"{name}_lora_b", nnx.Param(jnp.zeros(shape_b, jnp.float32)))

    def _dot(self, x: at.Array, w: at.Array, lora: tuple[at.Array, at.Array] | None) -> at.Array:
        out = matmul.dot(x, w.astype(x.dtype))
        if lora is None:
            return out
        lora_a, lora_b = lora
        return out + matmul.dot(matmul.dot(x, lora_a.astype(x.dtype)), lora_b.astype(x.dtype)) * (
            self.lora_config.scaling_value
        )

    def __call__(self, x: at.Array) -> at.Array:
        # Gate and up projections as one product batched over the two (one GEMM, the stacked weight used as stored).
        batch = string.ascii_lowercase[: x.ndim - 1]
        eqn = f"K{batch}Y,KYZ->K{batch}Z"
        pair = jnp.broadcast_to(x, (2, *x.shape))
        gate, up = matmul.einsum(eqn, pair, self.gating_einsum[...].astype(x.dtype))
        if self.lora_config is not None:
            low_rank = matmul.einsum(eqn, pair, self.gating_einsum_lora_a[...].astype(x.dtype))
            low_rank = matmul.einsum(eqn, low_rank, self.gating_einsum_lora_b[...].astype(x.dtype))
            gate_lora, up_lora = low_rank * self.lora_config.scaling_value
            gate, up = gate + gate_lora, up + up_lora
        hidden = jax.nn.gelu(gate) * up
        linear_lora = None
        if self.lora_config is not None:
            linear_lora = (self.linear_lora_a[...], self.linear_lora_b[...])
        return self._dot(hidden, self.linear[...], linear_lora)


def freeze_filter(lora_experts: Sequence[bool]) -> nnx.filterlib.Filter:
    """The params that stay frozen when fine-tuning with LoRA, given which Gemma experts have adapters
    (`lora_experts[0]`: PaliGemma's; `lora_experts[1]`, when there is an action expert: its).

    Frozen: the base weights of every expert that has adapters. Trained: the adapters, the experts without them and
    everything outside the Gemma (`llm`): vision tower, projections. `nnx.Nothing` when no expert has adapters. Param
    paths name the action expert's weights with the suffix `_1` (`q_einsum_1`, `mlp_1`).
    """
    if len(lora_experts) not in (1, 2):
        raise ValueError(f"lora_experts: expected one flag per Gemma expert (1 or 2), got {list(lora_experts)}")
    llm = PathRegex(".*llm.*")
    action_expert = PathRegex(".*llm.*_1.*")
    paligemma_lora, *expert = lora_experts
    expert_lora = bool(expert) and expert[0]
    if paligemma_lora:
        # The whole Gemma, but an action expert without adapters trains in full.
        filters = [llm] if expert_lora or not expert else [llm, nnx.Not(action_expert)]
    elif expert_lora:
        filters = [action_expert]
    else:
        return nnx.Nothing
    return nnx.All(*filters, nnx.Not(PathRegex(".*lora.*")))
