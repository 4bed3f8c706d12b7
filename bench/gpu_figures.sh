#!/usr/bin/env bash
# GPU figures for bench/RESULTS.md, in one go: full pi0 (bf16 weights) sample_actions latency and memory (pi0.5
# beside it, and with the denoising steps' layers looped),
# serving overhead and 8-client batching throughput, a full-pi0 gradient step.
#
#   bash bench/gpu_figures.sh            # in an environment with jax[cuda] and the project's dependencies
#
# Written for a machine without network whose Python already holds jax[cuda], flax, optax, orbax: wheels of
# what it lacks can sit in .whl/ (websockets, tyro, docstring-parser), and the sources are used in place.
# Logs go to $OUT (default /tmp/gpu_figures).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_figures}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src:$PWD/packages/openpi-client/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
} 2>&1 | tee "$OUT/gpu.txt"

stage() {  # stage NAME SECONDS COMMAND...: one measurement, its log in $OUT/NAME.log, bounded in time
  local name=$1 seconds=$2
  shift 2
  echo "== $name: $* (at most ${seconds} s)"
  timeout "$seconds" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]}"
}

stage model_pi0_sample 200 "$PY" bench/bench_model.py --configs pi0 --dtypes bfloat16 \
  --sample-param-dtype bfloat16 --sample-batch-sizes 1 2 4 8 --grad-batch-sizes --repeats 10 \
  --profile-dir /tmp/gpu_profiles
# Issue 19: the denoising steps' layers unrolled (the default since 2026-11-29) against looped, and pi0.5 beside pi0;
# bench/gpu_kernels.py gives the kernel counts of the same programs without a GPU.
stage model_looped_steps 150 "$PY" bench/bench_model.py --configs pi0 pi05 --dtypes bfloat16 \
  --sample-param-dtype bfloat16 --sample-batch-sizes 1 8 --grad-batch-sizes --repeats 10 --unroll-layers False
stage model_pi05_sample 120 "$PY" bench/bench_model.py --configs pi05 --dtypes bfloat16 \
  --sample-param-dtype bfloat16 --sample-batch-sizes 1 8 --grad-batch-sizes --repeats 10 \
  --profile-dir /tmp/gpu_profiles
stage model_pi0_grad 120 "$PY" bench/bench_model.py --configs pi0 --dtypes bfloat16 \
  --sample-batch-sizes --grad-batch-sizes 2 8 --repeats 3
stage model_pi0_float32 60 "$PY" bench/bench_model.py --configs pi0 --dtypes float32 \
  --sample-batch-sizes 1 --grad-batch-sizes --repeats 10
if [ "${SERVING:-1}" = 1 ]; then
  stage serving_pi0 240 "$PY" bench/bench_serving.py --policy trivial --requests 200 \
    --throughput-policy pi0 --throughput-requests 20
fi
for run in /tmp/gpu_profiles/*/; do  # one perfetto trace per measurement, flat in $OUT
  trace=$(find "$run" -name perfetto_trace.json.gz | head -n 1)
  [ -n "$trace" ] && cp "$trace" "$OUT/$(basename "$run").trace.json.gz"
done
