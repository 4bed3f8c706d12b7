"""Model benchmark of pi0, pi0.5 and pi0-FAST: compile time and warm latency of ``sample_actions`` and of a
``compute_loss`` gradient step.

    uv run bench/bench_model.py                                   # the dummy table of all three (a while on CPU)
    uv run bench/bench_model.py --configs dummy pi05_dummy pi0_fast_dummy --dtypes float32 --sample-batch-sizes 1 \\
        --grad-batch-sizes

    # side by side with the original openpi (its environment's Python, its sources): ratios per row
    uv run bench/bench_model.py --reference-python /path/to/original/.venv/bin/python \\
        --reference-pythonpath /path/to/original/src --configs dummy --sample-batch-sizes 1 --grad-batch-sizes 2

    # on a GPU: the full models with bf16 weights, as serve_policy.py loads them
    python bench/bench_model.py --configs pi0 pi05 pi0_fast --dtypes bfloat16 --sample-param-dtype bfloat16 \\
        --grad-batch-sizes

Configs (``CONFIGS``): ``dummy`` (pi0: full So400m/14 SigLIP, tiny Gemma experts), ``gemma_300m`` (both experts
gemma_300m-sized), ``pi0`` (the full model: gemma_2b + gemma_300m expert, 3.3 B params); ``pi05_dummy`` /
``pi05_gemma_300m`` / ``pi05`` (pi0.5, the same sizes); ``pi0_fast_dummy`` / ``pi0_fast_gemma_300m`` / ``pi0_fast``
(pi0-FAST: SigLIP + one Gemma, tiny, gemma_300m-sized or gemma_2b).
pi0 and pi0.5 sample 10 flow steps; pi0-FAST decodes up to ``--fast-decoding-steps`` tokens after a prompt of random
ids (an untrained model seldom writes EOS there, so every step runs; the script says when decoding stopped early), and
with two or more step counts it also prints the cost per generated token. Prints one row per measurement plus peak RSS (and the accelerator's peak
memory when it reports one); appends nothing anywhere: copy figures into bench/RESULTS.md.
"""

import collections
import contextlib
import dataclasses
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import psutil
import tyro

from openpi.models import matmul
from openpi.models import model as _model
from openpi.models import pi0
from openpi.models import pi0_fast
from openpi.shared import compilation_cache

_DUMMY_EXPERTS = {"paligemma_variant": "dummy", "action_expert_variant": "dummy"}
# Name → (model config class, its fields besides dtype and remat).
CONFIGS: dict[str, tuple[type[_model.BaseModelConfig], dict]] = {
    "dummy": (pi0.Pi0Config, _DUMMY_EXPERTS),
    "gemma_300m": (pi0.Pi0Config, {"paligemma_variant": "gemma_300m", "action_expert_variant": "gemma_300m"}),
    "pi0": (pi0.Pi0Config, {}),
    "pi05_dummy": (pi0.Pi0Config, {"pi05": True, **_DUMMY_EXPERTS}),
    "pi05_gemma_300m": (
        pi0.Pi0Config,
        {"pi05": True, "paligemma_variant": "gemma_300m", "action_expert_variant": "gemma_300m"},
    ),
    "pi05": (pi0.Pi0Config, {"pi05": True}),
    "pi0_fast_dummy": (pi0_fast.Pi0FASTConfig, {"paligemma_variant": "dummy"}),
    "pi0_fast_gemma_300m": (pi0_fast.Pi0FASTConfig, {"paligemma_variant": "gemma_300m"}),
    "pi0_fast": (pi0_fast.Pi0FASTConfig, {}),
}


@dataclasses.dataclass
class Args:
    configs: tuple[str, ...] = ("dummy", "pi05_dummy", "pi0_fast_dummy")
    dtypes: tuple[str, ...] = ("bfloat16", "float32")
    sample_batch_sizes: tuple[int, ...] = (1, 8)
    grad_batch_sizes: tuple[int, ...] = (2, 8)
    repeats: int = 3
    """Warm calls per measurement (the median is reported)."""
    remat: bool = True
    """Recompute activations in the backward pass (the original always does); False trades memory for speed."""
    unroll_layers: _model.UnrollLayers = "sampling"
    """Compile the layer loops unrolled (``Pi0Config.unroll_layers``: True, or "sampling" for the per-step passes of
    sampling only): no per-layer parameter slices, longer compile."""
    compilation_cache: bool = False
    """Use the persistent compilation cache (then 'compile' shows a warm-cache start)."""
    sample_param_dtype: str | None = None
    """Cast the weights to this dtype for ``sample_actions`` (a served policy holds bfloat16 weights, as in the
    original); default: keep the float32 weights a freshly created model holds."""
    profile_dir: str | None = None
    """Write a profiler trace (perfetto ``*.trace.json.gz``) of one warm call per measurement here."""
    fast_decoding_steps: tuple[int, ...] = (1, 256)
    """Tokens pi0-FAST decodes per ``sample_actions`` call, one measurement each (the released configs allow 256)."""
    reference_python: str | None = None
    """Python of an environment holding the original openpi (its ``src`` on ``reference_pythonpath``): then the
    ``dummy``/``pi05_dummy`` rows are measured side by side instead, both implementations through
    ``bench/model_api_timing.py`` (the original's public API), alternating, and the ratios printed. Each side runs
    its defaults (remat on, its own layer loops and products): ``--remat``, ``--unroll-layers``, ``--plain-products``
    and ``--profile-dir`` do not apply there."""
    reference_pythonpath: str | None = None
    rounds: int = 2
    """Side-by-side rounds; each runs both implementations once per dtype (first ours, then the original, then
    the other way round), and the median over rounds is compared."""
    plain_products: bool = False
    """Trace every matrix product as a plain ``jnp.einsum`` (``matmul.plain_products``): the path before the CPU's
    native bfloat16 products, to compare."""


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matmul rate right now (XLA), to read the other figures against (load varies)."""
    a = jnp.ones((size, size), jnp.float32)
    square = jax.jit(lambda a: a @ a)
    jax.block_until_ready(square(a))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(square(a))
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def _measure(fn, args: tuple, repeats: int, profile_dir: str | None = None) -> tuple[float, float]:
    first = _timed(fn, *args)
    warm = [_timed(fn, *args) for _ in range(repeats)]
    median = statistics.median(warm)
    if profile_dir is not None:
        os.makedirs(profile_dir, exist_ok=True)
        with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
            _timed(fn, *args)
    return first - median, median  # compile time ~ first call minus a warm call


def bench_config(name: str, dtype: str, args: Args) -> list[tuple[str, int, float, float]]:
    config_class, fields = CONFIGS[name]
    config = config_class(dtype=dtype, remat=args.remat, unroll_layers=args.unroll_layers, **fields)
    model = config.create(jax.random.key(0))
    graphdef, state = nnx.split(model)
    sample_state = state
    if args.sample_param_dtype is not None:
        params = jax.tree.map(lambda x: x.astype(args.sample_param_dtype), nnx.to_pure_dict(state))
        sample_state = nnx.state(config.load(params))
    rows = []

    @functools.partial(jax.jit, static_argnames="sample_kwargs")
    def sample(state, observation, sample_kwargs):
        return nnx.merge(graphdef, state).sample_actions(jax.random.key(1), observation, **dict(sample_kwargs))

    @jax.jit
    def grad_step(state, observation, actions):
        def loss_fn(state):
            loss = nnx.merge(graphdef, state).compute_loss(jax.random.key(2), observation, actions, train=True)
            return jnp.mean(loss)

        return jax.value_and_grad(loss_fn)(state)

    fast = config.model_type == _model.ModelType.PI0_FAST
    if fast:
        samplings = [(f"decode {steps} tok", (("max_decoding_steps", steps),)) for steps in args.fast_decoding_steps]
    else:
        samplings = [("sample_actions", ())]
    for batch_size in args.sample_batch_sizes:
        observation = _fast_prompt_obs(config, batch_size) if fast else config.fake_obs(batch_size)
        warm_by_steps = {}
        for what, sample_kwargs in samplings:
            fn = functools.partial(sample, sample_kwargs=sample_kwargs)
            inputs = (sample_state, observation)
            compile_s, warm_s = _measure(
                fn, inputs, args.repeats, _profile_dir(args, name, dtype, what.replace(" ", "_"), batch_size)
            )
            rows.append((what, batch_size, compile_s, warm_s))
            _print_row(name, dtype, *rows[-1])
            if fast:
                steps = dict(sample_kwargs)["max_decoding_steps"]
                decoded = _decoded_steps(fn(*inputs))
                if decoded != steps:
                    print(f"  (stopped early: all sequences wrote EOS after {decoded} of {steps} tokens)", flush=True)
                warm_by_steps[decoded] = warm_s
        if len(warm_by_steps) > 1:
            fewest, most = min(warm_by_steps), max(warm_by_steps)
            per_token_ms = (warm_by_steps[most] - warm_by_steps[fewest]) / (most - fewest) * 1000
            print(
                f"{name:<19} {dtype:<9} per generated token (steps {fewest} → {most}): {per_token_ms:.2f} ms",
                flush=True,
            )
    for batch_size in args.grad_batch_sizes:
        inputs = (state, config.fake_obs(batch_size), config.fake_act(batch_size))
        profile_dir = _profile_dir(args, name, dtype, "grad", batch_size)
        compile_s, warm_s = _measure(grad_step, inputs, args.repeats, profile_dir)
        rows.append(("grad_step", batch_size, compile_s, warm_s))
        _print_row(name, dtype, *rows[-1])
    return rows


def _fast_prompt_obs(config: _model.BaseModelConfig, batch_size: int) -> _model.Observation:
    """`fake_obs` with a prompt of random token ids in one bidirectional block, as a served prompt is: the all-ones
    prompt of `fake_obs` makes an untrained pi0-FAST write EOS (id 1) at once, which would end decoding."""
    observation = config.fake_obs(batch_size)
    tokens = jax.random.randint(jax.random.key(3), observation.tokenized_prompt.shape, 2, config.vocab_size)
    return dataclasses.replace(
        observation, tokenized_prompt=tokens, token_ar_mask=jnp.zeros_like(observation.token_ar_mask)
    )


def _decoded_steps(tokens: jax.Array) -> int:
    """How many decoding steps ran: up to the last step at which some sequence wrote a nonzero id (after an early
    stop the ids are zero)."""
    ran = np.flatnonzero(np.any(np.asarray(tokens) != 0, axis=0))
    return int(ran[-1]) + 1 if ran.size else 0


def _profile_dir(args: Args, *labels) -> str | None:
    if args.profile_dir is None:
        return None
    return os.path.join(args.profile_dir, "_".join(map(str, labels)))


def _device_peak_gib() -> float | None:
    """Peak memory in use on the first device since the start (GPUs report it; the CPU backend does not)."""
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def _print_row(name, dtype, what, batch_size, compile_s, warm_s):
    rss_gib = psutil.Process().memory_info().rss / 2**30
    device_peak = _device_peak_gib()
    device = "" if device_peak is None else f"  device peak {device_peak:6.2f} GiB"
    print(
        f"{name:<19} {dtype:<9} {what:<15} batch {batch_size:<2} compile {compile_s:7.2f} s  "
        f"warm {warm_s * 1000:9.1f} ms  rss {rss_gib:5.2f} GiB{device}",
        flush=True,
    )


_API_VARIANTS = {"dummy": "pi0", "pi05_dummy": "pi05"}


def _api_timing(python: str, pythonpath: str | None, variant: str, dtype: str, args: Args) -> list[dict]:
    """One run of ``model_api_timing.py`` in a fresh process: its JSON rows."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    command = [python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_api_timing.py")]
    command += ["--variant", variant, "--dtype", dtype, "--repeats", str(args.repeats)]
    command += ["--sample-batch-sizes", *map(str, args.sample_batch_sizes)]
    command += ["--grad-batch-sizes", *map(str, args.grad_batch_sizes)]
    if args.sample_param_dtype is not None:
        command += ["--sample-param-dtype", args.sample_param_dtype]
    result = subprocess.run(command, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def side_by_side(args: Args) -> None:
    """Both implementations through the same script, alternating; prints each run and the median ratios."""
    unknown = [name for name in args.configs if name not in _API_VARIANTS]
    if unknown:
        raise ValueError(f"configs: side by side supports {sorted(_API_VARIANTS)}, got {unknown}")
    sides = {"ours": (sys.executable, None), "original": (args.reference_python, args.reference_pythonpath)}
    print(f"float32 matmul rate before: {matmul_gflops():.0f} GFLOP/s, load average {os.getloadavg()}")
    warm: dict[tuple, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for round_index in range(args.rounds):
        order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
        for name in args.configs:
            for dtype in args.dtypes:
                for side in order:
                    for row in _api_timing(*sides[side], _API_VARIANTS[name], dtype, args):
                        if row["what"] == "peak_rss_gib":
                            print(f"round {round_index} {side:<8} {name} {dtype}: peak RSS {row['value']:.2f} GiB")
                            continue
                        warm[(name, dtype, row["what"], row["batch"])][side].append(row["warm_s"])
                        print(
                            f"round {round_index} {side:<8} {name:<10} {dtype:<9} {row['what']:<14} batch "
                            f"{row['batch']:<2} compile {row['compile_s']:6.2f} s  warm {row['warm_s'] * 1000:8.1f} ms"
                            f"  ({row['source']})",
                            flush=True,
                        )
    print("median over rounds (original / ours > 1: ours is faster):")
    for (name, dtype, what, batch), by_side in warm.items():
        ours, original = statistics.median(by_side["ours"]), statistics.median(by_side["original"])
        print(
            f"{name:<10} {dtype:<9} {what:<14} batch {batch:<2} ours {ours * 1000:8.1f} ms  original "
            f"{original * 1000:8.1f} ms  ratio {original / ours:.2f}x"
        )
    print(f"float32 matmul rate after: {matmul_gflops():.0f} GFLOP/s, load average {os.getloadavg()}")


def main(args: Args) -> None:
    if args.reference_python is not None:
        side_by_side(args)
        return
    if args.compilation_cache:
        compilation_cache.enable()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} {jax.devices()[0].device_kind} "
        f"({platform.processor() or platform.machine()}), {psutil.cpu_count()} cpus, remat={args.remat}, "
        f"sample weights {args.sample_param_dtype or 'float32'}, plain products={args.plain_products}"
    )
    print(f"float32 matmul rate before: {matmul_gflops():.0f} GFLOP/s, load average {os.getloadavg()}")
    with matmul.plain_products() if args.plain_products else contextlib.nullcontext():
        for name in args.configs:
            for dtype in args.dtypes:
                bench_config(name, dtype, args)
    print(f"float32 matmul rate after: {matmul_gflops():.0f} GFLOP/s, load average {os.getloadavg()}")
    max_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {max_rss_gib:.2f} GiB")


if __name__ == "__main__":
    main(tyro.cli(Args))
