"""Times ``sample_actions`` and a gradient step through the original openpi's public model API only, so that the
same script measures either implementation: ours (our environment) or the original (its environment on
``PYTHONPATH``). ``bench_model.py --reference-python ...`` runs it on both sides, alternately, and prints the ratios.

    python bench/model_api_timing.py --variant pi0 --dtype bfloat16 --sample-batch-sizes 1 --grad-batch-sizes 2

Uses: ``openpi.models.pi0_config.Pi0Config`` (``paligemma_variant``/``action_expert_variant`` "dummy": full
So400m/14 SigLIP, tiny Gemma experts; ``pi05``), ``create``/``load``/``fake_obs``/``fake_act``,
``openpi.shared.nnx_utils.module_jit`` (how the original's Policy compiles ``sample_actions``), and for the gradient
the original's train-step form: ``nnx.split(model, nnx.Param, ...)`` and ``jax.value_and_grad`` of the mean
``compute_loss(..., train=True)``. Prints one JSON object per measurement.
"""

import argparse
import json
import os
import resource
import statistics
import time

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from openpi.models import pi0_config
from openpi.shared import nnx_utils


def _timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def _measure(fn, repeats: int) -> dict:
    first = _timed(fn)
    warm = [_timed(fn) for _ in range(repeats)]
    median = statistics.median(warm)
    return {"compile_s": first - median, "warm_s": median, "warm_all_s": warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=("pi0", "pi05"), default="pi0")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--sample-batch-sizes", type=int, nargs="*", default=[1])
    parser.add_argument("--grad-batch-sizes", type=int, nargs="*", default=[2])
    parser.add_argument("--sample-param-dtype", default=None, help="cast the weights to this dtype for sampling")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = pi0_config.Pi0Config(
        paligemma_variant="dummy", action_expert_variant="dummy", dtype=args.dtype, pi05=args.variant == "pi05"
    )
    model = config.create(jax.random.key(0))
    common = {"variant": args.variant, "dtype": args.dtype, "source": os.path.dirname(pi0_config.__file__)}

    sample_model = model
    if args.sample_param_dtype is not None:
        params = nnx.to_pure_dict(nnx.state(model))
        sample_model = config.load(jax.tree.map(lambda x: x.astype(args.sample_param_dtype), params))
    sample_model.eval()
    sample = nnx_utils.module_jit(sample_model.sample_actions)
    for batch_size in args.sample_batch_sizes:
        observation = config.fake_obs(batch_size)
        row = _measure(lambda observation=observation: sample(jax.random.key(1), observation), args.repeats)
        print(json.dumps({**common, "what": "sample_actions", "batch": batch_size, **row}), flush=True)

    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, rest, rng, observation, actions):
        return jnp.mean(nnx.merge(graphdef, params, rest).compute_loss(rng, observation, actions, train=True))

    grad_step = jax.jit(jax.value_and_grad(loss))
    for batch_size in args.grad_batch_sizes:
        inputs = (params, rest, jax.random.key(2), config.fake_obs(batch_size), config.fake_act(batch_size))
        row = _measure(lambda inputs=inputs: grad_step(*inputs), args.repeats)
        print(json.dumps({**common, "what": "grad_step", "batch": batch_size, **row}), flush=True)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({**common, "what": "peak_rss_gib", "value": peak_gib}), flush=True)


if __name__ == "__main__":
    main()
