"""Gemma decoder as a mixture of experts that share self-attention (PaliGemma LLM + pi0 action expert).

Every token sequence in ``xs`` is routed through its own expert's weights (norms, projections, MLP), but all
sequences attend to each other in one joint attention. Parameter names follow the original checkpoints: the
first expert's modules have plain names (``q_einsum``), the i-th expert's carry the suffix ``_i``
(``q_einsum_1``), and the layer stack is stored with a leading depth axis under ``layers``.

An expert may be conditioned (pi0.5's action expert on the flow time): its RMSNorms become adaptive, a linear map
of the conditioning vector giving each norm a scale, a shift and a gate for the residual branch it feeds. With a
single expert the module is plain PaliGemma (pi0-FAST), which also decodes token logits with the embedding table.
"""

import dataclasses
import string
from typing import Literal, NamedTuple, TypeAlias

import einops
import flax.nnx as nnx
import jax
import jax.numpy as jnp

from openpi.models import lora
from openpi.models import matmul
from openpi.models import stacking
from openpi.shared import array_typing as at

PALIGEMMA_VOCAB_SIZE = 257_152

# The logit of a masked (query, key) pair: large and negative, but finite. A padding token's query has every key
# masked; with -inf its softmax would be exp(-inf - -inf) = NaN, and the NaN would spread to valid tokens through
# their attention to its values (0 * NaN is NaN) and on into the loss and gradients. With a finite value that row is
# merely uniform, and nothing reads a padding token's output. (0.7 times the float32 minimum, as in the Gemma
# reference.)
_MASK_VALUE = -2.3819763e38

KVCache: TypeAlias = tuple[at.Float[at.Array, "l b s k h"], at.Float[at.Array, "l b s k h"]]


class AdaRMSModulations(NamedTuple):
    """Every adaptive norm's modulation (``RMSNorm.modulation``) for given conditioning vectors, per expert (None
    for an expert without): ``layers`` maps each layer norm's name to its modulations stacked over the layers
    [depth, ..., 3 * width], ``final`` holds the final norm's [..., 3 * width]."""

    layers: list[dict[str, at.Array] | None]
    final: list[at.Array | None]


@dataclasses.dataclass(frozen=True)
class Config:
    """One Gemma expert's dimensions; ``lora_configs`` maps "attn" / "ffn" to adapters (LoRA variants only)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    lora_configs: tuple[tuple[str, lora.LoRAConfig], ...] = ()

    def lora_config(self, name: str) -> lora.LoRAConfig | None:
        return dict(self.lora_configs).get(name)


_VARIANTS = {
    "dummy": Config(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
    "gemma_300m": Config(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
    "gemma_2b": Config(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256),
}
_LORA_VARIANTS = {
    "gemma_2b_lora": ("gemma_2b", lora.LoRAConfig(rank=16, alpha=16.0)),
    "gemma_300m_lora": ("gemma_300m", lora.LoRAConfig(rank=32, alpha=32.0)),
}
VARIANTS = (*_VARIANTS, *_LORA_VARIANTS)
Variant: TypeAlias = Literal["dummy", "gemma_300m", "gemma_2b", "gemma_2b_lora", "gemma_300m_lora"]
# The gated MLP of each layer (with optional LoRA), under the name the original's gemma module gives it.
FeedForward = lora.FeedForward


def get_config(variant: "str | Config") -> Config:
    """Decodes a variant name (see ``VARIANTS``); a ``Config`` passes through, for custom sizes."""
    if isinstance(variant, Config):
        return variant
    if variant in _VARIANTS:
        return _VARIANTS[variant]
    if variant in _LORA_VARIANTS:
        base, adapter = _LORA_VARIANTS[variant]
        return dataclasses.replace(_VARIANTS[base], lora_configs=(("attn", adapter), ("ffn", adapter)))
    raise ValueError(f"gemma variant: expected one of {list(VARIANTS)} or a gemma.Config, got {variant!r}")


def _name(base: str, expert: int) -> str:
    return base if expert == 0 else f"{base}_{expert}"


class RMSNorm(nnx.Module):
    """RMS normalisation, computed in float32, with a learned ``(1 + scale)`` gain; or, when ``adaptive``, with a
    gain, shift and residual gate computed from a conditioning vector (adaRMSNorm, zero-initialised: identity)."""

    def __init__(self, width: int, *, adaptive: bool = False, rngs: nnx.Rngs | None = None):
        if adaptive:
            self.Dense_0 = nnx.Linear(width, 3 * width, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)
        else:
            self.scale = nnx.Param(jnp.zeros((width,), jnp.float32))

    @property
    def adaptive(self) -> bool:
        return hasattr(self, "Dense_0")

    def modulation(self, cond: at.Array, dtype) -> at.Array:
        """An adaptive norm's scale, shift and gate (concatenated on the last axis) for the conditioning vectors
        ``cond`` [..., width], computed in ``dtype``. Called on a layer stack's norm (parameters with a leading depth
        axis), every layer's, stacked [depth, ..., 3 * width]."""
        kernel, bias = self.Dense_0.kernel[...].astype(dtype), self.Dense_0.bias[...].astype(dtype)
        if kernel.ndim == 2:
            return matmul.dot(cond.astype(dtype), kernel) + bias
        batch = string.ascii_lowercase[: cond.ndim - 1]
        modulation = matmul.einsum(f"{batch}Y,LYZ->L{batch}Z", cond.astype(dtype), kernel)
        return modulation + bias.reshape(bias.shape[0], *[1] * (cond.ndim - 1), bias.shape[1])

    def __call__(
        self, x: at.Array, cond: at.Array | None = None, modulation: at.Array | None = None
    ) -> tuple[at.Array, at.Array | None]:
        """Returns the normed ``x`` and the residual gate (None unless adaptive). An adaptive norm takes its
        conditioning vector ``cond``, one per example [b, width] or per token [b, t, width], or the ``modulation``
        it gives (``modulation(cond, x.dtype)``), computed beforehand."""
        var = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
        normed = x * jax.lax.rsqrt(var + 1e-6)
        if not self.adaptive:
            if cond is not None or modulation is not None:
                raise ValueError("RMSNorm: got a conditioning vector, but this norm is not adaptive")
            return (normed * (1 + self.scale[...])).astype(x.dtype), None
        if modulation is None:
            if cond is None:
                raise ValueError("RMSNorm: this adaptive norm needs a conditioning vector (adarms_cond)")
            modulation = self.modulation(cond, x.dtype)
        if modulation.ndim == 2:  # one per example: the same for every token
            modulation = modulation[:, None, :]
        scale, shift, gate = jnp.split(modulation, 3, axis=-1)
        return (normed * (1 + scale) + shift).astype(x.dtype), gate


def _residual(x: at.Array | None, y: at.Array | None, gate: at.Array | None) -> at.Array | None:
    """``x + y``, the branch ``y`` scaled by the adaptive norm's gate when there is one."""
    if x is None:
        return None
    return x + y if gate is None else x + y * gate


class Embedder(nnx.Module):
    """Token embedding table; embeddings are scaled by sqrt(width)."""

    def __init__(self, vocab_size: int, width: int, *, rngs: nnx.Rngs):
        init = jax.nn.initializers.normal(stddev=1.0 / width**0.5)
        self.input_embedding = nnx.Param(init(rngs.params(), (vocab_size, width), jnp.float32))

    def encode(self, tokens: at.Int[at.Array, "b t"]) -> at.Float[at.Array, "b t d"]:
        x = self.input_embedding[...][tokens]
        return x * jnp.sqrt(x.shape[-1]).astype(x.dtype)

    def decode(self, x: at.Float[at.Array, "b t d"]) -> at.Float[at.Array, "b t v"]:
        """Token logits: the embedding table doubles as the output projection."""
        return jnp.dot(x, self.input_embedding[...].T)


def apply_rope(x: at.Array, positions: at.Int[at.Array, "b t"], max_wavelength: int = 10_000) -> at.Array:
    """Rotary position embedding over the last axis of ``x`` [b, t, heads, head_dim], in float32."""
    freq_exponents = (2.0 / x.shape[-1]) * jnp.arange(x.shape[-1] // 2, dtype=jnp.float32)
    timescale = max_wavelength**freq_exponents
    radians = (positions[..., None] / timescale)[..., None, :]
    sin, cos = jnp.sin(radians), jnp.cos(radians)
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class Attention(nnx.Module):
    """Self-attention shared by all experts: per-expert projections, one joint softmax (grouped-query).

    Einsum axes: B batch; T the tokens queries come from; S the tokens keys and values come from (the same tokens
    as T, after any cached ones); D model width; N query heads; K key/value heads; G query heads per key/value
    head (N = K * G); H head dim; a leading 3 or 2 stacks query, key, value or key, value.
    """

    def __init__(self, configs: tuple[Config, ...], *, float32_queries: bool = False, rngs: nnx.Rngs):
        first = configs[0]
        for config in configs:
            if (config.num_heads, config.num_kv_heads, config.head_dim) != (
                first.num_heads,
                first.num_kv_heads,
                first.head_dim,
            ):
                raise ValueError("gemma experts: all experts must share num_heads, num_kv_heads and head_dim")
        self.configs = configs
        self.float32_queries = float32_queries
        # As in the original checkpoints: one fused projection when every head has its own keys/values (multi-head
        # attention), separate query and key/value projections for grouped-query attention.
        self.fused_qkv = first.num_kv_heads == first.num_heads
        for i, config in enumerate(configs):
            adapter = config.lora_config("attn")
            if self.fused_qkv:
                projections = {"qkv_einsum": ((3, config.num_heads, config.width, config.head_dim), (0, 1))}
            else:
                projections = {
                    "q_einsum": ((config.num_heads, config.width, config.head_dim), (0,)),
                    "kv_einsum": ((2, config.num_kv_heads, config.width, config.head_dim), (0, 1)),
                }
            for base, (shape, batch_axis) in projections.items():
                init_fn = jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=batch_axis)
                setattr(self, _name(base, i), lora.Einsum(shape, init_fn=init_fn, lora_config=adapter, rngs=rngs))
            setattr(
                self,
                _name("attn_vec_einsum", i),
                lora.Einsum(
                    (config.num_heads, config.head_dim, config.width),
                    init_fn=jax.nn.initializers.lecun_normal(in_axis=(-3, -2), out_axis=-1),
                    lora_config=adapter,
                    rngs=rngs,
                ),
            )

    def __call__(
        self,
        xs: list[at.Array | None],
        positions: at.Int[at.Array, "b t"],
        attn_mask: at.Bool[at.Array, "b 1 t s"],
        kv_cache: tuple[at.Array, at.Array] | None,
        cache_index: at.Int[at.Array, ""] | None = None,
    ) -> tuple[list[at.Array | None], tuple[at.Array, at.Array]]:
        qs, ks, vs = [], [], []
        for i, x in enumerate(xs):
            if x is None:
                continue
            if self.fused_qkv:
                q, k, v = getattr(self, _name("qkv_einsum", i))("BSD,3KDH->3BSKH", x)
            else:
                q = getattr(self, _name("q_einsum", i))("BTD,NDH->BTNH", x)
                k, v = getattr(self, _name("kv_einsum", i))("BSD,2KDH->2BSKH", x)
            qs.append(q)
            ks.append(k)
            vs.append(v)
        q, k, v = (jnp.concatenate(parts, axis=1) for parts in (qs, ks, vs))
        head_dim = self.configs[0].head_dim
        if self.float32_queries:
            q = apply_rope(q.astype(jnp.float32), positions) * head_dim**-0.5
        else:
            q = apply_rope(q, positions) * jnp.asarray(head_dim**-0.5, q.dtype)
        k = apply_rope(k, positions)
        if kv_cache is not None and cache_index is not None:
            # A fixed-size cache (autoregressive decoding): the new keys/values overwrite slots from cache_index on.
            k = jax.lax.dynamic_update_slice_in_dim(kv_cache[0], k.astype(kv_cache[0].dtype), cache_index, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(kv_cache[1], v.astype(kv_cache[1].dtype), cache_index, axis=1)
        elif kv_cache is not None:
            k = jnp.concatenate([kv_cache[0], k], axis=1)
            v = jnp.concatenate([kv_cache[1], v], axis=1)
        if attn_mask.shape != (q.shape[0], 1, q.shape[1], k.shape[1]):
            raise ValueError(
                f"attn_mask: expected shape {(q.shape[0], 1, q.shape[1], k.shape[1])}, got {attn_mask.shape}"
            )

        q = einops.rearrange(q, "B T (K G) H -> B T K G H", K=self.configs[0].num_kv_heads)
        logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32)
        logits = jnp.where(attn_mask[:, :, None, :, :], logits, _MASK_VALUE)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        encoded = matmul.einsum("BKGTS,BSKH->BTKGH", probs, v)
        encoded = einops.rearrange(encoded, "B T K G H -> B T (K G) H")

        out: list[at.Array | None] = []
        start = 0
        for i, x in enumerate(xs):
            if x is None:
                out.append(None)
                continue
            end = start + x.shape[1]
            out.append(getattr(self, _name("attn_vec_einsum", i))("BTNH,NHD->BTD", encoded[:, start:end]))
            start = end
        return out, (k, v)


class Block(nnx.Module):
    """One transformer layer: pre-norm joint attention, then pre-norm per-expert MLP, both residual."""

    def __init__(self, configs: tuple[Config, ...], adarms: tuple[bool, ...], *, float32_queries: bool, rngs: nnx.Rngs):
        self.num_experts = len(configs)
        self.attn = Attention(configs, float32_queries=float32_queries, rngs=rngs)
        for i, (config, adaptive) in enumerate(zip(configs, adarms, strict=True)):
            setattr(self, _name("pre_attention_norm", i), RMSNorm(config.width, adaptive=adaptive, rngs=rngs))
            setattr(self, _name("pre_ffw_norm", i), RMSNorm(config.width, adaptive=adaptive, rngs=rngs))
            setattr(
                self,
                _name("mlp", i),
                lora.FeedForward(config.width, config.mlp_dim, lora_config=config.lora_config("ffn"), rngs=rngs),
            )

    NORMS = ("pre_attention_norm", "pre_ffw_norm")

    def _norm(self, name: str, xs: list, conds: list, modulations: list) -> tuple[list, list]:
        normed = [
            (None, None) if x is None else getattr(self, _name(name, i))(x, cond, None if mods is None else mods[name])
            for i, (x, cond, mods) in enumerate(zip(xs, conds, modulations, strict=True))
        ]
        return [n for n, _ in normed], [g for _, g in normed]

    def __call__(self, xs, positions, attn_mask, kv_cache, adarms_cond, cache_index, modulations):
        normed, gates = self._norm("pre_attention_norm", xs, adarms_cond, modulations)
        attn_out, kv_cache = self.attn(normed, positions, attn_mask, kv_cache, cache_index)
        xs = [_residual(x, a, g) for x, a, g in zip(xs, attn_out, gates, strict=True)]
        normed, gates = self._norm("pre_ffw_norm", xs, adarms_cond, modulations)
        mlp_out = [None if n is None else getattr(self, _name("mlp", i))(n) for i, n in enumerate(normed)]
        return [_residual(x, h, g) for x, h, g in zip(xs, mlp_out, gates, strict=True)], kv_cache


class Module(nnx.Module):
    """The Gemma mixture: embedder (first expert's vocabulary), stacked layers, per-expert final norms.

    ``adarms`` says per expert whether its norms are adaptive (conditioned through ``adarms_cond``); by default
    none is. ``float32_queries`` keeps the rotary-embedded queries in float32 under a bfloat16 ``embed_dtype``, as
    the original's single-expert (pi0-FAST) Gemma does; pi0's rounds them to bfloat16.
    """

    def __init__(
        self,
        configs: tuple[Config, ...],
        *,
        embed_dtype: str = "bfloat16",
        vocab_size: int = PALIGEMMA_VOCAB_SIZE,
        remat: bool = True,
        unroll: bool = False,
        adarms: tuple[bool, ...] | None = None,
        float32_queries: bool = False,
        rngs: nnx.Rngs,
    ):
        depth = configs[0].depth
        if any(config.depth != depth for config in configs):
            raise ValueError("gemma experts: all experts must have the same depth")
        adarms = tuple(adarms) if adarms is not None else (False,) * len(configs)
        if len(adarms) != len(configs):
            raise ValueError(f"adarms: expected one flag per expert ({len(configs)}), got {adarms}")
        self.configs = configs
        self.adarms = adarms
        self.embed_dtype = jnp.dtype(embed_dtype)
        self.remat = remat
        self.unroll = unroll
        self.embedder = Embedder(vocab_size, configs[0].width, rngs=rngs)
        self.layers = stacking.make_stack(
            depth, lambda layer_rngs: Block(configs, adarms, float32_queries=float32_queries, rngs=layer_rngs), rngs
        )
        for i, (config, adaptive) in enumerate(zip(configs, adarms, strict=True)):
            setattr(self, _name("final_norm", i), RMSNorm(config.width, adaptive=adaptive, rngs=rngs))

    def embed(self, tokens: at.Int[at.Array, "b t"]) -> at.Float[at.Array, "b t d"]:
        return self.embedder.encode(tokens).astype(self.embed_dtype)

    def logits(self, x: at.Float[at.Array, "b t d"]) -> at.Float[at.Array, "b t v"]:
        """Next-token logits from the first expert's final-normed outputs."""
        return self.embedder.decode(x)

    def adarms_modulations(self, adarms_cond: list[at.Array | None]) -> AdaRMSModulations:
        """The modulations of every adaptive norm for the conditioning vectors ``adarms_cond`` (one entry per
        expert, [..., width] or None), to compute once what several calls conditioned alike would each compute
        (pass them as ``__call__``'s ``adarms_modulations``)."""
        if len(adarms_cond) != len(self.configs):
            raise ValueError(
                f"adarms_cond: expected one entry per expert ({len(self.configs)}), got {len(adarms_cond)}"
            )
        layers = [
            None
            if cond is None
            else {name: getattr(self.layers, _name(name, i)).modulation(cond, self.embed_dtype) for name in Block.NORMS}
            for i, cond in enumerate(adarms_cond)
        ]
        final = [
            None if cond is None else getattr(self, _name("final_norm", i)).modulation(cond, self.embed_dtype)
            for i, cond in enumerate(adarms_cond)
        ]
        return AdaRMSModulations(layers, final)

    def __call__(
        self,
        embedded: list[at.Array | None],
        positions: at.Int[at.Array, "b t"],
        mask: at.Bool[at.Array, "b t s"],
        kv_cache: KVCache | None = None,
        *,
        adarms_cond: list[at.Array | None] | None = None,
        cache_index: at.Int[at.Array, ""] | None = None,
        unroll: bool | None = None,
        adarms_modulations: AdaRMSModulations | None = None,
    ) -> tuple[list[at.Array | None], KVCache]:
        """Runs the stack; returns final-normed outputs per expert and this call's keys/values per layer.

        With ``kv_cache`` (keys/values of earlier tokens, e.g. the prefix), queries attend to the cached tokens
        followed by the new ones, and the returned cache holds both. With ``cache_index`` as well, ``kv_cache`` is
        a fixed-size buffer instead: the new keys/values are written into it from that slot on, queries attend to
        the whole buffer (``mask`` spans it), and the updated buffer is returned.
        ``adarms_cond`` holds one conditioning vector [b, width] or one per token [b, t, width] (or None) per
        expert; ``adarms_modulations`` (``adarms_modulations(adarms_cond)``, computed beforehand) may stand in for
        it. ``unroll`` compiles this call's layers unrolled or looped (None: as the module was built).
        """
        xs = [None if e is None else e.astype(self.embed_dtype) for e in embedded]
        conds = list(adarms_cond) if adarms_cond is not None else [None] * len(xs)
        if len(conds) != len(xs):
            raise ValueError(f"adarms_cond: expected one entry per expert ({len(xs)}), got {len(conds)}")
        attn_mask = jnp.asarray(mask)[:, None, :, :]
        modulations = adarms_modulations
        if modulations is None:
            modulations = AdaRMSModulations([None] * len(xs), [None] * len(xs))
        xs, new_cache = stacking.scan_stack(
            self.layers,
            lambda block, xs, inputs: block(xs, positions, attn_mask, inputs[0], conds, cache_index, inputs[1]),
            xs,
            (kv_cache, modulations.layers),
            remat=self.remat,
            unroll=self.unroll if unroll is None else unroll,
        )
        outputs = [
            None if x is None else getattr(self, _name("final_norm", i))(x, cond, final)[0]
            for i, (x, cond, final) in enumerate(zip(xs, conds, modulations.final, strict=True))
        ]
        return outputs, new_cache
