"""Crash-safe writes: build a file or directory under a temp name beside its target, then rename it into place.

Temp files and directories are created with the modes `open(path, "w")` (0o666) and `os.mkdir` (0o777) ask for, so
the umask applies as usual and what gets renamed into place is as readable as any other file the process writes.
(`tempfile.mkstemp` / `mkdtemp` create 0o600 / 0o700, which would leave the results private to their owner.)
"""

from collections.abc import Callable, Iterator
import contextlib
import glob
import os
import pathlib
import secrets
from typing import IO

_NAME_ATTEMPTS = 100


def _create_unique(
    parent: pathlib.Path, prefix: str, suffix: str, create: Callable[[pathlib.Path], None]
) -> pathlib.Path:
    """`parent/<prefix><random><suffix>`, made by `create`, which must raise FileExistsError if the name is taken."""
    for _ in range(_NAME_ATTEMPTS):
        candidate = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{parent}: found no free name {prefix}*{suffix} in {_NAME_ATTEMPTS} attempts")


def _create_empty_file(path: pathlib.Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def fsync_file(path: str | os.PathLike) -> None:
    """Flushes `path`'s contents to disk (before it is renamed into place, so a crash cannot leave it empty)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a new empty temp file beside `path` for the caller (or a library) to fill.

    When the block ends normally the temp file is fsynced and renamed over `path`; when it raises, the temp file is
    deleted and `path` is left as it was. The temp name is hidden and ends in `.tmp`, so pass the file format
    explicitly to writers that guess it from the extension.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_unique(path.parent, f".{path.name}.", ".tmp", _create_empty_file)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(path: str | os.PathLike) -> list[pathlib.Path]:
    """Deletes the temp files `atomic_path(path)` left behind when a process writing `path` was killed (SIGKILL, power
    loss) mid-write; call it before writing `path` again, while no other process writes it. Returns what it deleted."""
    path = pathlib.Path(path)
    stale = sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")) if path.parent.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO]:
    """`open(path, mode)` that only replaces `path` once the block has completed (see `atomic_path`)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replaces `path` with `data` atomically (see `atomic_path`)."""
    with atomic_write(path) as f:
        f.write(data)


def staging_dir(parent: str | os.PathLike, prefix: str) -> pathlib.Path:
    """A new empty directory `parent/<prefix><random>`, to assemble a tree in before renaming it into place."""
    parent = pathlib.Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return _create_unique(parent, prefix, "", lambda candidate: candidate.mkdir(0o777))
