"""The argument contract of the ops (SPEC.md, common rules), checked once per call before any backend sees it:
bad input raises a clear TypeError/ValueError naming the argument. Signatures equal the ops'. Runs on fake
tensors and symbolic sizes too (torch.compile, dynamic shapes)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _tensor(op: str, name: str, x, ndim: int, dims: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"mmrec.{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"mmrec.{op}: {name} must be a floating tensor (float16, bfloat16, float32, float64), "
                        f"got {x.dtype}")
    if x.dim() != ndim:
        raise ValueError(f"mmrec.{op}: {name} must have {ndim} dims {dims}, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"mmrec.{op}: {name} must not be empty (every dim >= 1), got shape {tuple(x.shape)}")
    return x


def _like(op: str, first: str, x0: Tensor, name: str, x: Tensor) -> None:
    if x.dtype != x0.dtype:
        raise TypeError(f"mmrec.{op}: {name} has dtype {x.dtype} but {first} has {x0.dtype}; all tensors of one "
                        f"call share a dtype")
    if x.device != x0.device:
        raise ValueError(f"mmrec.{op}: {name} is on {x.device} but {first} is on {x0.device}")


def _shape(op: str, name: str, x: Tensor, expected: Sequence[int], dims: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"mmrec.{op}: {name} must have shape {dims} = {tuple(expected)}, got {tuple(x.shape)}")


def _bool(op: str, name: str, x) -> None:
    if not isinstance(x, bool):
        raise TypeError(f"mmrec.{op}: {name} must be a bool, got {type(x).__name__}")


def scan(a, b, h0: Optional[Tensor] = None, reverse=False) -> None:
    _tensor("scan", "a", a, 3, "[B, T, D]")
    _tensor("scan", "b", b, 3, "[B, T, D]")
    _like("scan", "a", a, "b", b)
    _shape("scan", "b", b, a.shape, "[B, T, D] like a")
    if h0 is not None:
        _tensor("scan", "h0", h0, 2, "[B, D]")
        _like("scan", "a", a, "h0", h0)
        _shape("scan", "h0", h0, (a.shape[0], a.shape[2]), "[B, D]")
    _bool("scan", "reverse", reverse)


def recurrence(z, gamma, w, bias: Optional[Tensor] = None, h0: Optional[Tensor] = None) -> None:
    op = "recurrence"
    _tensor(op, "z", z, 3, "[B, T, D]")
    _tensor(op, "gamma", gamma, 3, "[B, T, D]")
    _like(op, "z", z, "gamma", gamma)
    _shape(op, "gamma", gamma, z.shape, "[B, T, D] like z")
    _tensor(op, "w", w, 3, "[H, d, d]")
    _like(op, "z", z, "w", w)
    B, _, D = z.shape
    H, d, d2 = w.shape
    if d != d2 or H * d != D:
        raise ValueError(f"mmrec.{op}: w must have shape [H, d, d] with H * d = D = {D}, got {tuple(w.shape)}")
    if bias is not None:
        _tensor(op, "bias", bias, 1, "[D]")
        _like(op, "z", z, "bias", bias)
        _shape(op, "bias", bias, (D,), "[D]")
    if h0 is not None:
        _tensor(op, "h0", h0, 2, "[B, D]")
        _like(op, "z", z, "h0", h0)
        _shape(op, "h0", h0, (B, D), "[B, D]")


def mdi(v, mod, base, m0: Optional[Tensor] = None, eps=1e-6) -> None:
    op = "mdi"
    _tensor(op, "v", v, 3, "[B, T, D]")
    _tensor(op, "mod", mod, 3, "[B, T, N]")
    _like(op, "v", v, "mod", mod)
    _tensor(op, "base", base, 2, "[N, D]")
    _like(op, "v", v, "base", base)
    B, T, D = v.shape
    N = base.shape[0]
    _shape(op, "mod", mod, (B, T, N), "[B, T, N]")
    _shape(op, "base", base, (N, D), "[N, D]")
    if m0 is not None:
        _tensor(op, "m0", m0, 3, "[B, N, D]")
        _like(op, "v", v, "m0", m0)
        _shape(op, "m0", m0, (B, N, D), "[B, N, D]")
    if isinstance(eps, bool) or not isinstance(eps, (float, int, torch.SymFloat)):
        raise TypeError(f"mmrec.{op}: eps must be a float, got {type(eps).__name__}")
    if not 0.0 < eps < 0.5:  # also false for NaN and infinities
        raise ValueError(f"mmrec.{op}: eps must be in (0, 0.5), got {eps}")


def memory_update(M0, key, value, strength) -> None:
    op = "memory_update"
    _tensor(op, "M0", M0, 3, "[B, S, D]")
    _tensor(op, "key", key, 3, "[B, NC, D]")
    _tensor(op, "value", value, 3, "[B, NC, D]")
    _tensor(op, "strength", strength, 2, "[B, NC]")
    for name, x in (("key", key), ("value", value), ("strength", strength)):
        _like(op, "M0", M0, name, x)
    B, _, D = M0.shape
    NC = key.shape[1]
    _shape(op, "key", key, (B, NC, D), "[B, NC, D]")
    _shape(op, "value", value, (B, NC, D), "[B, NC, D] like key")
    _shape(op, "strength", strength, (B, NC), "[B, NC]")


def _int(op: str, name: str, x, lo: int, hi: Optional[int] = None) -> None:
    """x: an int in [lo, hi); a SymInt (torch.compile traced it from a changing int, e.g. a segment's position) is
    checked when the compiled graph runs, without specialising the graph on its value."""
    def message() -> str:
        return f"mmrec.{op}: {name} must be in [{lo}, {'inf' if hi is None else hi}), got {x}"
    if isinstance(x, torch.SymInt):
        torch._check(x >= lo, message)
        if hi is not None:
            torch._check(x < hi, message)
        return
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"mmrec.{op}: {name} must be an int, got {type(x).__name__}")
    if x < lo or (hi is not None and x >= hi):
        raise ValueError(message())


def memory_read(q, h, v, mod, base, Ms, m0: Optional[Tensor] = None, k0=0, chunk_len=1, n_heads=1, eps=1e-6,
                norm_eps=1e-6) -> None:
    op = "memory_read"
    _tensor(op, "q", q, 3, "[B, T, D]")
    for name, x, ndim, dims in (("h", h, 3, "[B, T, D]"), ("v", v, 3, "[B, T, D]"), ("mod", mod, 3, "[B, T, N]"),
                                ("base", base, 2, "[N, D]"), ("Ms", Ms, 4, "[B, L, S, D]")):
        _tensor(op, name, x, ndim, dims)
        _like(op, "q", q, name, x)
    B, T, D = q.shape
    N = base.shape[0]
    _shape(op, "h", h, (B, T, D), "[B, T, D] like q")
    _shape(op, "v", v, (B, T, D), "[B, T, D] like q")
    _shape(op, "mod", mod, (B, T, N), "[B, T, N]")
    _shape(op, "base", base, (N, D), "[N, D]")
    _int(op, "chunk_len", chunk_len, 1)
    _int(op, "k0", k0, 0, chunk_len)
    _int(op, "n_heads", n_heads, 1)
    if D % n_heads:
        raise ValueError(f"mmrec.{op}: n_heads = {n_heads} must divide D = {D}")
    L = -(-(k0 + T) // chunk_len)
    _shape(op, "Ms", Ms, (B, L, Ms.shape[2], D), "[B, L, S, D] with L = ceil((k0 + T) / chunk_len)")
    if m0 is not None:
        _tensor(op, "m0", m0, 3, "[B, N, D]")
        _like(op, "q", q, "m0", m0)
        _shape(op, "m0", m0, (B, N, D), "[B, N, D]")
    for name, x, hi in (("eps", eps, 0.5), ("norm_eps", norm_eps, float("inf"))):
        if isinstance(x, bool) or not isinstance(x, (float, int, torch.SymFloat)):
            raise TypeError(f"mmrec.{op}: {name} must be a float, got {type(x).__name__}")
        if not 0.0 < x < hi:  # also false for NaN and infinities
            raise ValueError(f"mmrec.{op}: {name} must be in (0, {hi}), got {x}")
