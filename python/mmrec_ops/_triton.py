"""The `triton` backend: launches the kernels of mmrec_ops.triton_kernels on CUDA tensors (or CPU tensors
under TRITON_INTERPRET=1). Every dtype of the contract is served: float16/bfloat16/float32 accumulate in
float32, float64 in float64. Outputs come from backends.new_output; float32 scratch (partial sums reduced
here in a fixed order, so results are deterministic) from torch.empty."""
from __future__ import annotations

import math
import os
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from mmrec_ops.triton_kernels import mdi as _mdi
from mmrec_ops.triton_kernels import memory_update as _mu
from mmrec_ops.triton_kernels import recurrence as _rec
from mmrec_ops.triton_kernels import scan as _scan

from . import backends

INTERPRET = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")
# Tests set this to force the chunked (parallel over T) scan path with that many chunks.
SCAN_CHUNKS: Optional[int] = None


def _in(x: Optional[Tensor]) -> Optional[Tensor]:
    return None if x is None else x.detach().contiguous()


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _check_device(x: Tensor) -> None:
    if not (x.is_cuda or INTERPRET):
        raise ValueError("mmrec triton backend: tensors must be on a CUDA device (or set TRITON_INTERPRET=1 "
                         f"for CPU tensors), got {x.device}")


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


def _dummy(like: Tensor) -> Tensor:
    return torch.empty(1, dtype=like.dtype, device=like.device)


# --------------------------------------------------------------------------------------- scan
def _scan_blocks(dtype: torch.dtype):
    if INTERPRET:
        return 4, 8, 1
    if dtype == torch.float64:
        return 32, 32, 4
    return 64, 32, 4  # BLOCK_T, BLOCK_D, num_warps


def _scan_chunks(B: int, T: int, D: int, block_t: int, block_d: int, device: torch.device) -> int:
    if SCAN_CHUNKS is not None:
        return max(1, min(SCAN_CHUNKS, T))
    programs = B * triton.cdiv(D, block_d)
    target = 2 * _sm_count(device)
    if programs >= target:
        return 1
    return max(1, min(triton.cdiv(T, block_t), triton.cdiv(target, programs)))


def _scan_launch(a: Tensor, b: Tensor, init: Optional[Tensor], out: Tensor, *, reverse: bool, shift_a: bool,
                 mode: int, h: Optional[Tensor] = None, h0: Optional[Tensor] = None, da: Optional[Tensor] = None,
                 dh0: Optional[Tensor] = None) -> None:
    """Runs scan_kernel over a, b: [B, T, D] (init: [B, D] or None), chunking T when B * D is small."""
    B, T, D = a.shape
    block_t, block_d, warps = _scan_blocks(a.dtype)
    acc = _acc_dtype(a.dtype)
    nd = triton.cdiv(D, block_d)
    dummy = _dummy(a)
    flags = dict(REVERSE=reverse, SHIFT_A=shift_a, HAS_H0=h0 is not None, MODE=mode, ACC=_tl_acc(a.dtype),
                 BLOCK_T=block_t, BLOCK_D=block_d, num_warps=warps)
    ptrs = (h if h is not None else dummy, h0 if h0 is not None else dummy, da if da is not None else dummy,
            dh0 if dh0 is not None else dummy)
    nch = _scan_chunks(B, T, D, block_t, block_d, a.device)
    if nch == 1:
        _scan.scan_kernel[(nd, B, 1)](a, b, init if init is not None else dummy, out, *ptrs, dummy, dummy,
                                      T, D, T, 1, HAS_INIT=init is not None, **flags)
        return
    span = triton.cdiv(triton.cdiv(T, nch), block_t) * block_t
    nch = triton.cdiv(T, span)
    agg_a = torch.empty(B, nch, D, dtype=acc, device=a.device)  # prod of multipliers over each chunk
    agg_b = torch.empty(B, nch, D, dtype=acc, device=a.device)  # each chunk's end state from 0
    _scan.scan_kernel[(nd, B, nch)](a, b, dummy, dummy, *ptrs, agg_a, agg_b, T, D, span, nch,
                                    HAS_INIT=False, **{**flags, "MODE": 1})
    ends = torch.empty(B, nch, D, dtype=acc, device=a.device)  # state after each chunk
    _scan_launch(agg_a, agg_b, init, ends, reverse=False, shift_a=False, mode=0)
    start = torch.zeros(B, 1, D, dtype=acc, device=a.device) if init is None else init.to(acc).view(B, 1, D)
    carry_in = torch.cat([start, ends[:, :-1]], 1).contiguous()  # [B, nch, D]
    _scan.scan_kernel[(nd, B, nch)](a, b, carry_in, out, *ptrs, dummy, dummy, T, D, span, nch,
                                    HAS_INIT=True, **flags)


def scan_forward(a: Tensor, b: Tensor, h0: Optional[Tensor], reverse: bool) -> Tensor:
    a, b, h0 = _in(a), _in(b), _in(h0)
    _check_device(a)
    h = backends.new_output(a.shape, a)  # [B, T, D]
    _scan_launch(a, b, h0, h, reverse=reverse, shift_a=False, mode=0)
    return h


def scan_backward(grad: Tensor, a: Tensor, h: Tensor, h0: Optional[Tensor], reverse: bool):
    grad, a, h, h0 = _in(grad), _in(a), _in(h), _in(h0)
    _check_device(a)
    da, db = backends.new_output(a.shape, a), backends.new_output(a.shape, a)
    dh0 = backends.new_output((a.shape[0], a.shape[2]), a)
    _scan_launch(a, grad, None, db, reverse=not reverse, shift_a=True, mode=2, h=h, h0=h0, da=da, dh0=dh0)
    return da, db, dh0


# --------------------------------------------------------------------------------- recurrence
# tl.dot precision for float32 I/O: "ieee" (exact fp32 FMA) or "tf32x3" (tensor cores, ~fp32 accuracy).
# bfloat16/float16 I/O use "tf32" (error far below their own rounding); float64 is always "ieee".
RECURRENCE_FP32_PRECISION = os.environ.get("MMREC_TRITON_FP32_DOT", "ieee")
MAX_HEAD_DIM = 128


def _rec_config(B: int, d: int, dtype: torch.dtype):
    if d > MAX_HEAD_DIM:
        raise ValueError(f"mmrec.recurrence: the triton backend handles head dimensions d = D / H <= {MAX_HEAD_DIM}, "
                         f"got d = {d}; use more heads (w: [H, d, d]) or the cuda/cpu backend")
    block_h = max(16, triton.next_power_of_2(d))
    block_b = 16
    if dtype == torch.float64:
        prec = "ieee"
    elif dtype == torch.float32:
        prec = RECURRENCE_FP32_PRECISION
    else:
        prec = "tf32"
    warps = 1 if INTERPRET else (4 if block_h <= 32 else 8)
    return dict(ACC=_tl_acc(dtype), PREC=prec, BLOCK_B=block_b, BLOCK_H=block_h, num_warps=warps)


def recurrence_forward(z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor], h0: Optional[Tensor]) -> Tensor:
    z, gamma, w, bias, h0 = _in(z), _in(gamma), _in(w), _in(bias), _in(h0)
    _check_device(z)
    B, T, D = z.shape
    H, d, _ = w.shape
    cfg = _rec_config(B, d, z.dtype)
    dummy = _dummy(z)
    h = backends.new_output(z.shape, z)  # [B, T, D]
    grid = (triton.cdiv(B, cfg["BLOCK_B"]), H)
    _rec.recurrence_fwd_kernel[grid](z, gamma, w, bias if bias is not None else dummy,
                                     h0 if h0 is not None else dummy, h, B, T, D, d,
                                     HAS_BIAS=bias is not None, HAS_H0=h0 is not None, **cfg)
    return h


def recurrence_backward(grad: Tensor, z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor],
                        h0: Optional[Tensor], h: Tensor):
    grad, z, gamma, w, bias, h0, h = _in(grad), _in(z), _in(gamma), _in(w), _in(bias), _in(h0), _in(h)
    _check_device(z)
    B, T, D = z.shape
    H, d, _ = w.shape
    cfg = _rec_config(B, d, z.dtype)
    acc = _acc_dtype(z.dtype)
    dummy = _dummy(z)
    tiles = triton.cdiv(B, cfg["BLOCK_B"])
    dz, dgamma = backends.new_output(z.shape, z), backends.new_output(z.shape, z)
    dh0 = backends.new_output((B, D), z)
    dw_part = torch.empty(tiles, H, d, d, dtype=acc, device=z.device)
    dbias_part = torch.empty(tiles, D, dtype=acc, device=z.device)
    _rec.recurrence_bwd_kernel[(tiles, H)](grad, z, gamma, w, bias if bias is not None else dummy,
                                           h0 if h0 is not None else dummy, h, dz, dgamma, dh0, dw_part, dbias_part,
                                           B, T, D, d, H, HAS_BIAS=bias is not None, HAS_H0=h0 is not None, **cfg)
    dw = backends.new_output(w.shape, w)
    dw.copy_(dw_part.sum(0))
    dbias = backends.new_output((D,), z)
    dbias.copy_(dbias_part.sum(0))
    return dz, dgamma, dw, dbias, dh0


# ---------------------------------------------------------------------------------------- mdi
def _mdi_config(N: int, dtype: torch.dtype, backward: bool):
    block_n = triton.next_power_of_2(N)
    if INTERPRET:
        return dict(BLOCK_T=4, BLOCK_N=block_n, BLOCK_D=8, num_warps=1)
    block_d = max(8, min(64, 256 // block_n))
    block_t = 16 if backward or dtype == torch.float64 else 32
    return dict(BLOCK_T=block_t, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=4)


def _bounds(eps: float, like: Tensor) -> Tensor:
    return torch.tensor([eps, 1.0 - eps], dtype=_acc_dtype(like.dtype), device=like.device)


def mdi_forward(v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor], eps: float) -> Tensor:
    v, mod, base, m0 = _in(v), _in(mod), _in(base), _in(m0)
    _check_device(v)
    B, T, D = v.shape
    N = base.shape[0]
    cfg = _mdi_config(N, v.dtype, backward=False)
    m = backends.new_output((B, T, N, D), v)
    grid = (triton.cdiv(D, cfg["BLOCK_D"]), B)
    _mdi.mdi_fwd_kernel[grid](v, mod, base, m0 if m0 is not None else _dummy(v), m, _bounds(eps, v), T, N, D,
                              HAS_M0=m0 is not None, ACC=_tl_acc(v.dtype), **cfg)
    return m


def mdi_backward(grad: Tensor, v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor], m: Tensor, eps: float):
    grad, v, mod, base, m0, m = _in(grad), _in(v), _in(mod), _in(base), _in(m0), _in(m)
    _check_device(v)
    B, T, D = v.shape
    N = base.shape[0]
    cfg = _mdi_config(N, v.dtype, backward=True)
    acc = _acc_dtype(v.dtype)
    tiles = triton.cdiv(D, cfg["BLOCK_D"])
    dv = backends.new_output(v.shape, v)
    dm0 = backends.new_output((B, N, D), v)
    dmod_part = torch.empty(tiles, B, T, N, dtype=acc, device=v.device)
    dbase_part = torch.empty(B, N, D, dtype=acc, device=v.device)
    _mdi.mdi_bwd_kernel[(tiles, B)](grad, v, mod, base, m0 if m0 is not None else _dummy(v), m, _bounds(eps, v),
                                    dv, dm0, dmod_part, dbase_part, B, T, N, D,
                                    HAS_M0=m0 is not None, ACC=_tl_acc(v.dtype), **cfg)
    dmod = backends.new_output(mod.shape, mod)
    dmod.copy_(dmod_part.sum(0))
    dbase = backends.new_output(base.shape, base)
    dbase.copy_(dbase_part.sum(0))
    return dv, dmod, dbase, dm0


# ------------------------------------------------------------------------------ memory_update
def _mu_config(S: int, D: int):
    block_s = triton.next_power_of_2(S)
    if INTERPRET:
        return dict(BLOCK_S=block_s, BLOCK_D=4, num_warps=1)
    block_d = max(16, min(triton.next_power_of_2(D), 8192 // block_s))
    return dict(BLOCK_S=block_s, BLOCK_D=block_d, num_warps=8)


def _scale(D: int, like: Tensor) -> Tensor:
    return torch.tensor([1.0 / math.sqrt(D)], dtype=_acc_dtype(like.dtype), device=like.device)


def memory_update_forward(M0: Tensor, key: Tensor, value: Tensor, strength: Tensor) -> Tensor:
    M0, key, value, strength = _in(M0), _in(key), _in(value), _in(strength)
    _check_device(M0)
    B, S, D = M0.shape
    NC = key.shape[1]
    Ms = backends.new_output((B, NC + 1, S, D), M0)
    work = torch.empty(B, S, D, dtype=_acc_dtype(M0.dtype), device=M0.device)  # state M_c
    _mu.memory_update_fwd_kernel[(B,)](M0, key, value, strength, Ms, work, _scale(D, M0), NC, S, D,
                                       ACC=_tl_acc(M0.dtype), **_mu_config(S, D))
    return Ms


def memory_update_backward(grad: Tensor, M0: Tensor, key: Tensor, value: Tensor, strength: Tensor, Ms: Tensor):
    grad, M0, key, value, strength, Ms = _in(grad), _in(M0), _in(key), _in(value), _in(strength), _in(Ms)
    _check_device(M0)
    B, S, D = M0.shape
    NC = key.shape[1]
    dM0 = backends.new_output(M0.shape, M0)
    dkey, dvalue = backends.new_output(key.shape, key), backends.new_output(value.shape, value)
    dstrength = backends.new_output(strength.shape, strength)
    work = torch.empty(B, S, D, dtype=_acc_dtype(M0.dtype), device=M0.device)  # dL/dM_{c+1}
    _mu.memory_update_bwd_kernel[(B,)](grad, key, value, strength, Ms, work, dM0, dkey, dvalue, dstrength,
                                       _scale(D, M0), NC, S, D, ACC=_tl_acc(M0.dtype), **_mu_config(S, D))
    return dM0, dkey, dvalue, dstrength


_FUNCS = {"scan": (scan_forward, scan_backward), "recurrence": (recurrence_forward, recurrence_backward),
          "mdi": (mdi_forward, mdi_backward), "memory_update": (memory_update_forward, memory_update_backward)}


def register_all() -> None:
    for op, (fwd, bwd) in _FUNCS.items():
        backends.register("triton", op, fwd, bwd)
