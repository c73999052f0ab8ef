"""Helpers shared by the per-op test files: backend parametrisation, error metrics, runners, and the expected
gradients (tests/ops/spec_gradients.py, never the code under test)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Sequence

import pytest
import torch

from mmrec_ops import dispatch

from . import spec_gradients

LOW_PRECISION = (torch.bfloat16, torch.float16)


def backend_cases(op: str) -> List:
    """pytest params (backend, device) for every backend that serves `op` on a device here."""
    return [pytest.param(name, dev, id=f"{name}-{dev}") for name in dispatch.BACKENDS for dev in dispatch.DEVICES
            if dispatch.serves(name, op, dev)]


def dtypes_for(backend: str, device: str) -> List[torch.dtype]:
    """Low-precision I/O dtypes a backend supports on a device, besides float32/float64."""
    if device == "cuda":
        return [torch.bfloat16, torch.float16]
    if backend in ("cpu", "ref"):
        return [torch.bfloat16]
    return []


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max|out - ref| / max|ref|, NaN-propagating (NaN never passes a `<` check)."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if out64.shape != ref64.shape:
        raise AssertionError(f"shape {tuple(out64.shape)} != reference {tuple(ref64.shape)}")
    if not torch.isfinite(out64).all():
        return float("nan")
    denom = ref64.abs().max().item()
    return (out64 - ref64).abs().max().item() / (denom if denom > 0 else 1.0)


def assert_close(out, ref, tol: float, what: str = "output") -> None:
    err = rel_err(out, ref)
    assert err < tol, f"{what}: max|out-ref|/max|ref| = {err:.3e} (tolerance {tol:.1e})"


def tol_for(dtype: torch.dtype, float32_tol: float) -> float:
    return {torch.float64: 1e-10, torch.float32: float32_tol, torch.bfloat16: 2e-2, torch.float16: 5e-3}[dtype]


def run(backend: str, fn: Callable, *args, **kwargs):
    with dispatch.backend(backend):
        return fn(*args, **kwargs)


def grads(out: torch.Tensor, inputs: Sequence[torch.Tensor], seed: int = 0):
    """Gradients of <out, G> w.r.t. each input (None where unused), G = spec_gradients.cotangent(out.shape, seed)."""
    g = spec_gradients.cotangent(out.shape, seed).to(device=out.device, dtype=out.dtype)
    return torch.autograd.grad(out, list(inputs), g, allow_unused=True)


def spec_grads(op: str, args: Sequence, out_shape: Sequence[int], seed: int = 0) -> List[torch.Tensor]:
    """What `grads` must return for op(*args): SPEC.md's gradients in float64, one per tensor argument given."""
    return spec_gradients.gradients(op, args, out_shape, seed)


def layout(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Same values, other memory layout: 'contig', 'noncontig' (permuted storage), 'expanded' (stride 0) or 'sliced'
    (a view into a larger zero buffer: columns 1..W of [..., W + 3] for a [B, T, W] tensor, as the model's
    in-projection hands q and v to the ops; the first n of n + 1 along dim 1 otherwise, as its slot chunks)."""
    if kind == "sliced":
        grow = [0] * x.dim()
        grow[-1 if x.dim() == 3 else 1] = 3
        buf = x.new_zeros([size + g for size, g in zip(x.shape, grow)])
        view = buf[..., 1:1 + x.shape[-1]] if x.dim() == 3 else buf[:, :x.shape[1]]
        return view.copy_(x)
    if kind == "noncontig":
        return x.transpose(0, -1).contiguous().transpose(0, -1)
    if kind == "expanded":
        return x[:1].expand(x.shape) if x.shape[0] > 1 else x.expand(x.shape)
    return x


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def assert_bad_calls_raise(backend: str, fn: Callable, bad_calls) -> None:
    """Every (args, exception type, message pattern) of `bad_calls` raises that exception, matching, on `backend`."""
    for args, exc, message in bad_calls:
        with pytest.raises(exc, match=message):
            run(backend, fn, *args)


def in_three_threads(module: str, function: str, *args):
    """tests.ops.<module>.<function>(*args), JSON-encoded, from a fresh process with OMP_NUM_THREADS=3 (uneven work
    per thread; the OpenMP team size is fixed when a process starts)."""
    code = f"import json, tests.ops.{module} as t; print(json.dumps(t.{function}(*{args!r})))"
    env = dict(os.environ, OMP_NUM_THREADS="3", OMP_WAIT_POLICY="passive")  # 3 threads may share 2 cores
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])
