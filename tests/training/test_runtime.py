"""training/runtime.py's allocator setting: after keep_freed_memory() a large buffer freed and allocated again
reuses the process's pages (few page faults); glibc's default maps it afresh (a fault per 4 KiB page). Each case
runs in its own interpreter: the setting is process-wide."""
import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from mmrec_model.training.runtime import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
for _ in range(2):                                   # the first round faults the pages in either way
    torch.ones(50 * 2**20 // 4)                      # 50 MiB: above glibc's largest mmap threshold (32 MiB)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.ones(50 * 2**20 // 4)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    return kept == "True", int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_keep_freed_memory_reuses_pages():
    kept, faults = _faults("keep")
    default_kept, default_faults = _faults("default")
    assert kept and not default_kept
    assert default_faults > 0                         # glibc's default: fresh pages each round (51,200 of 4 KiB)
    assert faults * 20 < default_faults
