"""SigLIP vision transformer (big_vision ViT layout): patch embedding, learned position embedding,
pre-norm encoder blocks, final norm and a linear head that projects every patch token to the LLM width.

Parameter names follow the original checkpoints (``embedding``, ``pos_embedding``,
``Transformer/encoderblock/MultiHeadDotProductAttention_0/query``..., ``Transformer/encoder_norm``, ``head``).
"""

import dataclasses
import re

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from openpi.models import matmul
from openpi.models import stacking
from openpi.shared import array_typing as at


@dataclasses.dataclass(frozen=True)
class Config:
    """Vision tower dimensions; ``decode_variant("So400m/14")`` gives pi0's."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: tuple[int, int]


_SIZES = {  # name: (width, depth, mlp_dim, num_heads)
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
}


def decode_variant(variant: "str | Config") -> Config:
    """Decodes ``"<size>/<patch>"`` such as ``"So400m/14"``; a ``Config`` passes through, for custom sizes."""
    if isinstance(variant, Config):
        return variant
    match = re.fullmatch(r"(\w+)/(\d+)", variant)
    if match is None or match.group(1) not in _SIZES:
        raise ValueError(f"siglip variant: expected '<size>/<patch>' with size in {list(_SIZES)}, got {variant!r}")
    width, depth, mlp_dim, num_heads = _SIZES[match.group(1)]
    patch = int(match.group(2))
    return Config(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads, patch_size=(patch, patch))


def posemb_sincos_2d(
    height: int, width: int, features: int, temperature: float = 10_000.0, dtype=jnp.float32
) -> at.Float[at.Array, "1 n d"]:
    """Fixed 2-d sine-cosine position embeddings of a `height` x `width` patch grid, row-major: a quarter of the
    `features` each for sin/cos of the column and of the row, frequencies spaced geometrically up to `temperature`.
    (The So400m towers here learn theirs, `pos_embedding`; this is the original's helper for sincos variants.)"""
    if features % 4:
        raise ValueError(f"features: expected a multiple of 4, got {features}")
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    quarter = features // 4
    inverse_frequency = 1.0 / temperature ** (jnp.arange(quarter) / max(quarter - 1, 1))
    col_angles = cols.reshape(-1)[:, None] * inverse_frequency[None, :]
    row_angles = rows.reshape(-1)[:, None] * inverse_frequency[None, :]
    embedding = jnp.concatenate(
        [jnp.sin(col_angles), jnp.cos(col_angles), jnp.sin(row_angles), jnp.cos(row_angles)], axis=1
    )
    return embedding.astype(dtype)[None]


class PatchEmbedding(nnx.Module):
    """Non-overlapping patches projected to the model width (a strided convolution, done as one matmul)."""

    def __init__(self, patch_size: tuple[int, int], channels: int, width: int, *, rngs: nnx.Rngs):
        self.patch_size = patch_size
        self.kernel = nnx.Param(
            jax.nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)(
                rngs.params(), (*patch_size, channels, width), jnp.float32
            )
        )
        self.bias = nnx.Param(jnp.zeros((width,), jnp.float32))

    def __call__(self, images: at.Float[at.Array, "b h w c"]) -> at.Float[at.Array, "b n d"]:
        batch, height, width, channels = images.shape
        ph, pw = self.patch_size
        grid_h, grid_w = height // ph, width // pw
        patches = images[:, : grid_h * ph, : grid_w * pw].reshape(batch, grid_h, ph, grid_w, pw, channels)
        patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(batch, grid_h * grid_w, ph * pw * channels)
        kernel = self.kernel[...].reshape(ph * pw * channels, -1)
        return patches @ kernel + self.bias[...]


class MultiHeadAttention(nnx.Module):
    """Standard multi-head self-attention with biased query/key/value/out projections."""

    def __init__(self, width: int, num_heads: int, dtype, *, rngs: nnx.Rngs):
        head_dim = width // num_heads
        # LinearGeneral initialises the kernel in its flattened 2-D form.
        kernel_init = jax.nn.initializers.xavier_uniform()

        def projection():
            return nnx.LinearGeneral(
                width,
                (num_heads, head_dim),
                dtype=dtype,
                kernel_init=kernel_init,
                dot_general=matmul.dot_general,
                rngs=rngs,
            )

        self.query, self.key, self.value = projection(), projection(), projection()
        self.out = nnx.LinearGeneral(
            (num_heads, head_dim),
            width,
            axis=(-2, -1),
            dtype=dtype,
            kernel_init=kernel_init,
            dot_general=matmul.dot_general,
            rngs=rngs,
        )

    def __call__(self, x: at.Array) -> at.Array:
        q, k, v = self.query(x), self.key(x), self.value(x)
        q = q / jnp.sqrt(q.shape[-1]).astype(q.dtype)
        logits = matmul.einsum("bqhd,bkhd->bhqk", q, k)
        # Softmax in the matmul dtype, as the original (flax linen attention) computes it.
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        return self.out(matmul.einsum("bhqk,bkhd->bqhd", probs, v))


class MlpBlock(nnx.Module):
    """Dense → GELU (tanh) → Dense."""

    def __init__(self, width: int, mlp_dim: int, dtype, *, rngs: nnx.Rngs):
        inits = {
            "kernel_init": jax.nn.initializers.xavier_uniform(),
            "bias_init": jax.nn.initializers.normal(stddev=1e-6),
            "dot_general": matmul.dot_general,
        }
        self.Dense_0 = nnx.Linear(width, mlp_dim, dtype=dtype, rngs=rngs, **inits)
        self.Dense_1 = nnx.Linear(mlp_dim, width, dtype=dtype, rngs=rngs, **inits)

    def __call__(self, x: at.Array) -> at.Array:
        return self.Dense_1(jax.nn.gelu(self.Dense_0(x)))


class EncoderBlock(nnx.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: Config, dtype, *, rngs: nnx.Rngs):
        self.LayerNorm_0 = nnx.LayerNorm(config.width, dtype=dtype, rngs=rngs)
        self.MultiHeadDotProductAttention_0 = MultiHeadAttention(config.width, config.num_heads, dtype, rngs=rngs)
        self.LayerNorm_1 = nnx.LayerNorm(config.width, dtype=dtype, rngs=rngs)
        self.MlpBlock_0 = MlpBlock(config.width, config.mlp_dim, dtype, rngs=rngs)

    def __call__(self, x: at.Array) -> at.Array:
        x = x + self.MultiHeadDotProductAttention_0(self.LayerNorm_0(x))
        return x + self.MlpBlock_0(self.LayerNorm_1(x))


# The original (big_vision) name of the encoder block.
Encoder1DBlock = EncoderBlock


class Encoder(nnx.Module):
    """Stacked encoder blocks (``encoderblock``, leading depth axis) and the final ``encoder_norm``."""

    def __init__(self, config: Config, dtype, *, remat: bool, unroll: bool = False, rngs: nnx.Rngs):
        self.remat = remat
        self.unroll = unroll
        self.encoderblock = stacking.make_stack(
            config.depth, lambda layer_rngs: EncoderBlock(config, dtype, rngs=layer_rngs), rngs
        )
        self.encoder_norm = nnx.LayerNorm(config.width, dtype=dtype, rngs=rngs)

    def __call__(self, x: at.Array) -> at.Array:
        x, _ = stacking.scan_stack(
            self.encoderblock, lambda block, x, _: (block(x), None), x, remat=self.remat, unroll=self.unroll
        )
        return self.encoder_norm(x)


class Module(nnx.Module):
    """SigLIP image encoder; returns one ``num_classes``-wide token per patch (no pooling)."""

    def __init__(
        self,
        variant: "str | Config",
        num_classes: int,
        *,
        image_size: tuple[int, int] = (224, 224),
        dtype_mm: str = "bfloat16",
        remat: bool = True,
        unroll: bool = False,
        rngs: nnx.Rngs,
    ):
        config = decode_variant(variant)
        dtype = jnp.dtype(dtype_mm)
        self.dtype_mm = dtype
        num_patches = (image_size[0] // config.patch_size[0]) * (image_size[1] // config.patch_size[1])
        self.embedding = PatchEmbedding(config.patch_size, 3, config.width, rngs=rngs)
        self.pos_embedding = nnx.Param(
            jax.nn.initializers.normal(stddev=1 / config.width**0.5)(
                rngs.params(), (1, num_patches, config.width), jnp.float32
            )
        )
        self.Transformer = Encoder(config, dtype, remat=remat, unroll=unroll, rngs=rngs)
        self.head = nnx.Linear(config.width, num_classes, dtype=dtype, kernel_init=jax.nn.initializers.zeros, rngs=rngs)

    def __call__(self, images: at.Float[at.Array, "b h w c"]) -> at.Float[at.Array, "b n d"]:
        # Patch extraction and position embedding stay in float32; the encoder runs in dtype_mm.
        x = self.embedding(jnp.asarray(images, jnp.float32)) + self.pos_embedding[...]
        x = self.Transformer(x.astype(self.dtype_mm))
        return self.head(x)
