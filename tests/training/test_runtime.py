"""training/runtime.py's allocator setting. After keep_freed_memory() a 50 MiB tensor is served from the process's
heap (the [heap] mapping of /proc/self/maps), where freed blocks stay for reuse. glibc's default serves it from a
fresh mapping of its own, unmapped when freed. Each case runs in its own interpreter, because the setting is
process-wide. The speed effect on a training step is measured in bench/results/model_cpu_malloc.md."""
import platform
import subprocess
import sys

import pytest

PROBE = """
import sys, torch
from mmrec_model.training.runtime import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
t = torch.ones(50 * 2**20 // 4)                      # 50 MiB: above glibc's largest mmap threshold (32 MiB)
ptr = t.data_ptr()
for line in open("/proc/self/maps"):
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    if lo <= ptr < hi:
        print(kept, line.split()[-1] == "[heap]")
"""


def _probe(mode: str):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    kept, on_heap = out.stdout.split()
    return kept == "True", on_heap == "True"


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_keep_freed_memory_serves_large_tensors_from_the_heap():
    assert _probe("keep") == (True, True)
    assert _probe("default") == (False, False)


def test_own_gradients_replaces_each_gradient_with_a_copy():
    """After the first micro-batch under CUDA graphs the gradients must survive the graphs' next replay: each
    becomes a tensor of its own storage with the same values, later backwards add into it, and a parameter without
    a gradient keeps none."""
    import torch
    from mmrec_model.training.optimizer import own_gradients

    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    (used * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    first = used.grad
    own_gradients([used, unused])
    assert used.grad.data_ptr() != first.data_ptr() and torch.equal(used.grad, first)
    assert unused.grad is None
    first.fill_(float("nan"))                            # what the next replay does to the graph's output
    (used * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(used.grad, torch.tensor([2.0, 4.0, 6.0]))
