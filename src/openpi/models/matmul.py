"""Matrix products of the models: ``einsum``, ``dot`` and a ``dot_general`` for ``nnx.Linear``, fast for bfloat16
on CPUs.

XLA's CPU backend computes a bfloat16 x bfloat16 -> bfloat16 product as a float32 GEMM (both operands widened
first), while a bfloat16 x bfloat16 -> float32 product runs on the CPU's native bfloat16 dot-product instructions
(AVX512-BF16) at about twice the float32 rate. The two give the same numbers up to the summation order: both
accumulate in float32 and round once to bfloat16. So on a CPU backend with those instructions, products of two
bfloat16 operands ask for a float32 result and round it; the backward pass does the same with the cotangent rounded
to bfloat16 first, as the plain bfloat16 product's backward pass has it. Other dtypes, other CPUs and other backends
(a GPU already accumulates bfloat16 products in float32) take plain ``jnp.einsum``. ``plain_products()`` turns the
fast path off, to compare.

The backend is the one the program is lowered for (``jax.lax.platform_dependent``), not the process's default: a
program compiled for a GPU from a process whose default backend is the CPU (``bench/gpu_kernels.py``), or exported
for several platforms, gets each platform's products.
"""

from collections.abc import Callable
import contextlib
import functools
import logging
import math
import re
import string

import jax
import jax.numpy as jnp

logger = logging.getLogger(__name__)

_fast_bfloat16 = True


@contextlib.contextmanager
def plain_products():
    """Within this context (at trace time), every product is a plain ``jnp.einsum``: the unoptimised path."""
    global _fast_bfloat16
    previous, _fast_bfloat16 = _fast_bfloat16, False
    try:
        yield
    finally:
        _fast_bfloat16 = previous


def _parse(eqn: str) -> tuple[str, str, str] | None:
    """The two inputs' and the output's indices of ``eqn`` when each side of its backward pass is again a product
    of two operands (explicit output, no ellipsis, no index repeated within an operand, every input index in the
    output or the other input); else None."""
    if "->" not in eqn or "." in eqn:
        return None
    inputs, out = eqn.replace(" ", "").split("->")
    if inputs.count(",") != 1:
        return None
    a, b = inputs.split(",")
    if any(len(set(term)) != len(term) for term in (a, b, out)):
        return None
    if not set(a) <= set(out) | set(b) or not set(b) <= set(out) | set(a):
        return None
    return a, b, out


def _float32_product(eqn: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """The product of ``eqn`` with a float32 result, as one batched matrix product [batch, m, k] x [batch, k, n].

    That operand layout is the one XLA's CPU library kernels take for bfloat16 x bfloat16 -> float32; jax 0.10 sends
    some other layouts (a contracting axis that is not an operand's last or first matrix axis) to a kernel with no
    such form, which fails at run time ("Unsupported element type for DotThunk").
    """
    in_a, in_b, out = _parse(eqn)
    batch = [i for i in in_a if i in in_b and i in out]
    contracted = [i for i in in_a if i in in_b and i not in out]
    free_a, free_b = [i for i in in_a if i not in in_b], [i for i in in_b if i not in in_a]
    sizes = dict(zip(in_a, a.shape, strict=True)) | dict(zip(in_b, b.shape, strict=True))

    def matrix(x, indices, rows, cols):
        x = jnp.transpose(x, [indices.index(i) for i in batch + rows + cols])
        return x.reshape(
            math.prod(sizes[i] for i in batch), *(math.prod(sizes[i] for i in part) for part in (rows, cols))
        )

    product = jax.lax.dot_general(
        matrix(a, in_a, free_a, contracted),
        matrix(b, in_b, contracted, free_b),
        (((2,), (1,)), ((0,), (0,))),
        preferred_element_type=jnp.float32,
    )
    order = batch + free_a + free_b
    product = product.reshape([sizes[i] for i in order])
    return jnp.transpose(product, [order.index(i) for i in out])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rounded_einsum(eqn: str, a: jax.Array, b: jax.Array) -> jax.Array:
    return _float32_product(eqn, a, b).astype(a.dtype)


def _rounded_einsum_fwd(eqn, a, b):
    return _rounded_einsum(eqn, a, b), (a, b)


def _rounded_einsum_bwd(eqn, residuals, cotangent):
    a, b = residuals
    in_a, in_b, out = _parse(eqn)
    cotangent = cotangent.astype(a.dtype)
    return (
        _rounded_einsum(f"{out},{in_b}->{in_a}", cotangent, b),
        _rounded_einsum(f"{in_a},{out}->{in_b}", a, cotangent),
    )


_rounded_einsum.defvjp(_rounded_einsum_fwd, _rounded_einsum_bwd)


@functools.cache
def cpu_has_bfloat16_products() -> bool:
    """Whether this CPU has the bfloat16 dot-product instructions (x86 AVX512-BF16; the ones measured here) and XLA
    runs a bfloat16 x bfloat16 -> float32 product on it (tried once, on a small one)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = set(re.findall(r"^flags\s*:(.*)$", cpuinfo.read(), re.MULTILINE)[0].split())
    except (OSError, IndexError):
        return False
    if "avx512_bf16" not in flags:
        return False
    try:
        with jax.ensure_compile_time_eval(), jax.default_device(jax.devices("cpu")[0]):
            ones = jnp.ones((2, 8, 8), jnp.bfloat16)
            jax.block_until_ready(_float32_product("bmk,bkn->bmn", ones, ones))
    except RuntimeError as error:  # also a process without the CPU backend (JAX_PLATFORMS=cuda)
        logger.warning("bfloat16 products: XLA refused a bfloat16 x bfloat16 -> float32 product (%s); plain", error)
        return False
    return True


def _native_bfloat16(a: jax.Array, b: jax.Array) -> bool:
    """Whether a product of ``a`` and ``b`` takes the native bfloat16 path when lowered for this CPU."""
    return _fast_bfloat16 and a.dtype == b.dtype == jnp.bfloat16 and cpu_has_bfloat16_products()


def _product(eqn: str, a: jax.Array, b: jax.Array, plain: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
    """``plain(a, b)``, the product ``eqn`` describes; lowered for a CPU with native bfloat16 products, and when
    ``eqn``'s backward pass is again made of products, the float32 product rounded to bfloat16 instead."""
    parsed = _parse(eqn) if _native_bfloat16(a, b) else None
    if parsed is None or (len(parsed[0]), len(parsed[1])) != (a.ndim, b.ndim):
        return plain(a, b)
    return jax.lax.platform_dependent(a, b, cpu=functools.partial(_rounded_einsum, eqn), default=plain)


def einsum(eqn: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """``jnp.einsum(eqn, a, b)`` of two operands of the same dtype; its result has that dtype."""
    return _product(eqn, a, b, functools.partial(jnp.einsum, eqn))


def dot(x: jax.Array, w: jax.Array) -> jax.Array:
    """``jnp.dot(x, w)`` for a 2-D ``w``: contracts the last axis of ``x`` with the first of ``w``."""
    if w.ndim != 2:
        return jnp.dot(x, w)
    batch = string.ascii_lowercase[: x.ndim - 1]
    return _product(f"{batch}Y,YZ->{batch}Z", x, w, jnp.dot)


def dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers,
    precision=None,
    preferred_element_type=None,
    out_sharding=None,
) -> jax.Array:
    """``jax.lax.dot_general`` (for ``nnx.Linear(dot_general=...)``), as an ``einsum`` on the native bfloat16 path:
    batch axes first, then the free axes of ``lhs``, then those of ``rhs``, as ``lax.dot_general`` orders them."""
    plain = functools.partial(
        jax.lax.dot_general,
        dimension_numbers=dimension_numbers,
        precision=precision,
        preferred_element_type=preferred_element_type,
        out_sharding=out_sharding,
    )
    if precision is not None or preferred_element_type is not None or out_sharding is not None:
        return plain(lhs, rhs)
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    letters = iter(string.ascii_letters)
    lhs_idx = [next(letters) for _ in range(lhs.ndim)]
    rhs_idx = [next(letters) for _ in range(rhs.ndim)]
    for i, j in zip((*lhs_contract, *lhs_batch), (*rhs_contract, *rhs_batch), strict=True):
        rhs_idx[j] = lhs_idx[i]
    out = [lhs_idx[i] for i in lhs_batch]
    out += [lhs_idx[i] for i in range(lhs.ndim) if i not in (*lhs_contract, *lhs_batch)]
    out += [rhs_idx[j] for j in range(rhs.ndim) if j not in (*rhs_contract, *rhs_batch)]
    return _product(f"{''.join(lhs_idx)},{''.join(rhs_idx)}->{''.join(out)}", lhs, rhs, plain)
