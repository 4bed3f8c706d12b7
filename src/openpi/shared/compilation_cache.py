"""Persistent XLA compilation cache, so that a second start of the same program skips compilation."""

import os
import pathlib

import jax

CACHE_DIR_ENV = "JAX_COMPILATION_CACHE_DIR"


def enable(cache_dir: str | pathlib.Path | None = None, *, min_compile_time_s: float = 0.5) -> pathlib.Path:
    """Caches compiled programs on disk: ``cache_dir``, else ``$JAX_COMPILATION_CACHE_DIR``, else
    ``$OPENPI_DATA_HOME/jax_compilation_cache``. Programs that compile faster than ``min_compile_time_s``
    are not cached."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_DIR_ENV)
    if cache_dir is None:
        from openpi.shared import download

        cache_dir = download.get_cache_dir() / "jax_compilation_cache"
    path = pathlib.Path(cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
