"""Test helper: write under a known umask, then list what did not get the permissions `open()` / `os.mkdir` give."""

from collections.abc import Iterator
import contextlib
import os
import pathlib
import stat

# Not the usual 0o022, so modes hard-coded to 0o644 / 0o755 are caught as well as private 0o600 / 0o700 ones.
UMASK = 0o027
FILE_MODE = 0o666 & ~UMASK
DIR_MODE = 0o777 & ~UMASK


@contextlib.contextmanager
def umask(mask: int = UMASK) -> Iterator[None]:
    """Sets the process umask for the block and restores the previous one afterwards."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def unexpected_modes(root: pathlib.Path) -> dict[str, str]:
    """`{relative path: "actual (expected)"}` for `root` and everything below it whose permission bits are not
    FILE_MODE (files) or DIR_MODE (directories); empty when all are as a plain `open()` / `mkdir` would make them."""
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        if path.is_symlink():
            continue
        expected = DIR_MODE if path.is_dir() else FILE_MODE
        if mode(path) != expected:
            found[str(path.relative_to(root))] = f"{mode(path):o} (expected {expected:o})"
    return found
