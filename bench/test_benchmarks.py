"""pytest-benchmark entry point: `pytest bench --benchmark-only` times every op on every backend that
serves it here (forward and forward+backward, float32) at moderate shapes. The scripts bench_*.py
print the full tables with bandwidth fractions and peers, and write bench/results/*.json."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mmrec_ops  # noqa: E402
from mmrec_ops import dispatch  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(op: str, device: str):
    g = torch.Generator().manual_seed(0)

    def r(*shape, lo=-1.0, hi=1.0):
        return (torch.rand(shape, generator=g) * (hi - lo) + lo).to(device).requires_grad_(True)

    if op == "scan":
        return r(4, 1024, 512, lo=0.5), r(4, 1024, 512)
    if op == "recurrence":
        return r(2, 256, 256), r(2, 256, 256, lo=0.5), r(4, 64, 64, lo=-0.1, hi=0.1), r(256), None
    if op == "mdi":
        return r(4, 512, 256), r(4, 512, 4, lo=-3, hi=3), r(4, 256, lo=-2, hi=4)
    if op == "memory_read":     # q, h, v [B, T, D], mod [B, T, N], base [N, D], Ms [B, T / chunk, S, D]
        return (r(4, 512, 256), r(4, 512, 256), r(4, 512, 256), r(4, 512, 4, lo=-3, hi=3), r(4, 256, lo=-2, hi=4),
                r(4, 8, 8, 256))
    if op == "memory_update":
        return r(4, 8, 256), r(4, 32, 256), r(4, 32, 256), r(4, 32, lo=0, hi=1)
    raise ValueError(f"bench/test_benchmarks.py: no inputs for op {op!r}")


CASES = [pytest.param(op, name, p, id=f"{op}-{name}-{p}") for op in dispatch.OPS for name in dispatch.BACKENDS
         if dispatch.serves(name, op, DEVICE) for p in ("fwd", "fwd+bwd")]


@pytest.mark.parametrize("op,backend_name,pass_", CASES)
def test_op(benchmark, op, backend_name, pass_):
    fn = getattr(mmrec_ops, op)
    args = _inputs(op, DEVICE)

    kwargs = dict(chunk_len=64, n_heads=4) if op == "memory_read" else {}

    def step():
        with mmrec_ops.backend(backend_name):
            if pass_ == "fwd":
                with torch.no_grad():
                    out = fn(*args, **kwargs)
            else:
                out = fn(*args, **kwargs)
            out = out[0] if isinstance(out, tuple) else out                         # memory_read: (r, m_last)
            if pass_ != "fwd":
                out.sum().backward()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.group = f"{op} {pass_}"
    out = benchmark(step)
    assert torch.isfinite(out).all()
