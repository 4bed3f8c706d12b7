"""Test-wide settings: CPU JAX and one persistent compilation cache shared by tests and their subprocesses."""

import os
import pathlib

_CACHE = pathlib.Path(__file__).parents[1] / ".pytest_cache" / "jax_compilation_cache"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
