"""The allocator setting keeps freed memory mapped: reusing it costs no page faults."""

import subprocess
import sys
import textwrap

import pytest

# Allocates and frees 64 MiB twice; prints the page faults of the second allocation (16384 with 4 KiB pages when
# every page is faulted in afresh, fewer with transparent huge pages).
_PROBE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from openpi.shared import allocator
    if sys.argv[1] == "keep":
        assert allocator.keep_freed_memory()
    def faults_of_one_allocation():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = np.ones(16 * 2**20, np.float32)
        del block
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    faults_of_one_allocation()
    print(faults_of_one_allocation())
    """
)


def _second_allocation_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_memory_is_reused_without_page_faults():
    default = _second_allocation_faults("default")  # glibc's default maps a 64 MiB block afresh
    assert default > 20
    assert _second_allocation_faults("keep") < default / 10
