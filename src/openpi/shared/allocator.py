"""Host memory allocator settings for processes that run the same XLA program over and over (the trainer calls it;
the demo model's 3 ms batch-1 inference measured no difference, so serving does not).

XLA on the CPU allocates each execution's buffers with `malloc` and frees them when it ends. glibc's defaults give
freed memory back to the kernel as soon as a few hundred KiB sit free at the top of a heap, so every step maps its
buffers afresh and faults them in page by page: on the ALOHA sim demo's small model this was a fifth of the
training CPU time (system time) and a third of the wall time. Keeping freed memory for reuse removes that.
"""

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

# Blocks at least this large get a mapping of their own, unmapped when freed. glibc's default starts at 128 KiB and
# rises with the blocks freed, but only to 32 MiB, and a step's buffers are reused as soon as freed; the demo's train
# step lost its system time only with this raised above its largest buffers (measured: 32 MiB did not help).
MMAP_THRESHOLD_BYTES = 2**30
# Free memory a heap may keep at its top before it is given back.
TRIM_THRESHOLD_BYTES = 2**30
# Extra memory a heap takes whenever it grows, so that it grows rarely.
TOP_PAD_BYTES = 512 * 2**20

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse (see the module doc); once per process, no-op elsewhere.

    Returns whether the settings are in effect. The process's resident memory then stays near its peak instead of
    shrinking between steps.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        logger.debug("No glibc mallopt: allocator settings unchanged")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success.
    settings = {
        _M_MMAP_THRESHOLD: MMAP_THRESHOLD_BYTES,
        _M_TRIM_THRESHOLD: TRIM_THRESHOLD_BYTES,
        _M_TOP_PAD: TOP_PAD_BYTES,
    }
    results = [mallopt(parameter, value) for parameter, value in settings.items()]  # each applied in turn
    _applied = all(result == 1 for result in results)
    logger.debug("glibc malloc keeps freed memory: %s", _applied)
    return _applied
