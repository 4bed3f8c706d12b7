#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine (Python 3.11 + pip): bootstrap (uv, EGL/Mesa), then pytest through
# the locked environment, slow tests included (a plain `uv run pytest` is the fast lane). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec python3 -m uv run --frozen pytest -m "slow or not slow" "$@"
