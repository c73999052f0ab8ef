"""One description per op of how to build valid inputs and how to split a call into two segments
with the state carried; the contract tests (test_contract.py) run every op through these."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import torch

import mmrec_ops
from mmrec_ops import reference


def _rand(gen, shape, dtype, device, lo=-1.0, hi=1.0):
    x = torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    return x.to(device=device, dtype=dtype)


@dataclass(frozen=True)
class Case:
    op: str
    fn: Callable            # the torch op (mmrec_ops.<op>)
    ref: Callable           # mmrec_ops.reference.<op>
    make: Callable          # (gen, dtype, device, T) -> args tuple; optional states are given
    segment: Callable       # (args, k) -> (args of the first part, fn(out1) -> args of the second part)
    join: Callable          # (out1, out2) -> output of the whole call
    float32_tol: float      # max|out-ref|/max|ref| allowed for float32
    optional: Tuple[int, ...] = ()  # argument positions that may be None (zeros)


def _scan_make(gen, dtype, device, T=9):
    B, D = 2, 5
    return (_rand(gen, (B, T, D), dtype, device, 0.5, 1.0), _rand(gen, (B, T, D), dtype, device),
            _rand(gen, (B, D), dtype, device), False)


def _scan_segment(args, k):
    a, b, h0, rev = args
    return (a[:, :k], b[:, :k], h0, rev), lambda out1: (a[:, k:], b[:, k:], out1[:, -1], rev)


def _recurrence_make(gen, dtype, device, T=7):
    B, H, d = 2, 2, 3
    D = H * d
    return (_rand(gen, (B, T, D), dtype, device), _rand(gen, (B, T, D), dtype, device, 0.5, 1.0),
            _rand(gen, (H, d, d), dtype, device, -0.5, 0.5), _rand(gen, (D,), dtype, device, -0.3, 0.3),
            _rand(gen, (B, D), dtype, device))


def _recurrence_segment(args, k):
    z, g, w, bias, h0 = args
    return (z[:, :k], g[:, :k], w, bias, h0), lambda out1: (z[:, k:], g[:, k:], w, bias, out1[:, -1])


def _mdi_make(gen, dtype, device, T=8):
    B, N, D = 2, 3, 5
    return (_rand(gen, (B, T, D), dtype, device), _rand(gen, (B, T, N), dtype, device, -3, 3),
            _rand(gen, (N, D), dtype, device, -2, 4), _rand(gen, (B, N, D), dtype, device), 1e-6)


def _mdi_segment(args, k):
    v, mod, base, m0, eps = args
    return (v[:, :k], mod[:, :k], base, m0, eps), lambda out1: (v[:, k:], mod[:, k:], base, out1[:, -1], eps)


def _memory_update_make(gen, dtype, device, T=6):
    B, S, D = 2, 4, 5
    return (_rand(gen, (B, S, D), dtype, device), _rand(gen, (B, T, D), dtype, device, -2, 2),
            _rand(gen, (B, T, D), dtype, device), _rand(gen, (B, T), dtype, device, 0, 1))


def _memory_update_segment(args, k):
    M0, key, value, s = args
    return (M0, key[:, :k], value[:, :k], s[:, :k]), lambda out1: (out1[:, -1], key[:, k:], value[:, k:], s[:, k:])


CASES = {
    "scan": Case("scan", mmrec_ops.scan, reference.scan, _scan_make, _scan_segment,
                 lambda o1, o2: torch.cat([o1, o2], 1), 1e-6, (2,)),
    "recurrence": Case("recurrence", mmrec_ops.recurrence, reference.recurrence, _recurrence_make,
                       _recurrence_segment, lambda o1, o2: torch.cat([o1, o2], 1), 1e-5, (3, 4)),
    "mdi": Case("mdi", mmrec_ops.mdi, reference.mdi, _mdi_make, _mdi_segment,
                lambda o1, o2: torch.cat([o1, o2], 1), 1e-5, (3,)),
    "memory_update": Case("memory_update", mmrec_ops.memory_update, reference.memory_update, _memory_update_make,
                          _memory_update_segment, lambda o1, o2: torch.cat([o1, o2[:, 1:]], 1), 1e-5),
}


def tensor_indices(args: Tuple) -> Tuple[int, ...]:
    return tuple(i for i, x in enumerate(args) if isinstance(x, torch.Tensor))


def with_grad(args: Tuple) -> Tuple:
    return tuple(x.detach().clone().requires_grad_(True) if isinstance(x, torch.Tensor) else x for x in args)


def to64(args: Tuple) -> Tuple:
    return tuple(x.detach().double() if isinstance(x, torch.Tensor) else x for x in args)
