"""The `triton` backend: launches the kernels of mmrec_ops.triton_kernels (kernels/triton) on CUDA tensors, or CPU
tensors under TRITON_INTERPRET=1. Every dtype of the contract is served: float16/bfloat16/float32 accumulate in
float32, float64 in float64. Outputs come from outputs.new_output; scratch in the accumulation dtype (partial
sums reduced here in a fixed order, so results are deterministic) from torch.empty."""
from __future__ import annotations

import concurrent.futures
import functools
import math
import os
from typing import Dict, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..outputs import acc_dtype, new_output
from ..triton_kernels import mdi as _mdi
from ..triton_kernels import memory_read as _mr
from ..triton_kernels import memory_update as _mu
from ..triton_kernels import recurrence as _rec
from ..triton_kernels import scan as _scan
from . import Wrappers

INTERPRET = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


def _in(x: Optional[Tensor]) -> Optional[Tensor]:
    return None if x is None else x.detach().contiguous()


def _rows(x: Tensor) -> Tuple[Tensor, int]:
    """x [B, T, W] and its token stride R (element (b, t, i) at (b * T + t) * R + i): x itself when its tokens are
    evenly spaced rows of unit-stride columns (a column slice of a [B, T, >= W] buffer, as the model's in-projection
    gives q and v), else a contiguous copy."""
    B, T, W = x.shape
    R = x.stride(1) if T > 1 else (x.stride(0) if B > 1 else W)
    if (x.stride(2) == 1 or W == 1) and R >= W and (B == 1 or x.stride(0) == T * R) and (T == 1 or x.stride(1) == R):
        return x.detach(), R
    return x.detach().contiguous(), W


def _batch_rows(x: Tensor) -> Tuple[Tensor, int]:
    """x [B, ...] and its batch stride: x itself when each batch row is contiguous (a slice along dim 1 of a
    contiguous buffer, as the model's slot chunks Ms[:, :n]), else a contiguous copy."""
    inner = math.prod(x.shape[1:])
    if x.shape[0] > 0 and x[0].is_contiguous() and (x.shape[0] == 1 or x.stride(0) >= inner):
        return x.detach(), (x.stride(0) if x.shape[0] > 1 else inner)
    return x.detach().contiguous(), inner


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _check_device(x: Tensor) -> None:
    if not (x.is_cuda or INTERPRET):
        raise ValueError("mmrec triton backend: tensors must be on a CUDA device (or set TRITON_INTERPRET=1 "
                         f"for CPU tensors), got {x.device}")


def _dummy(like: Tensor) -> Tensor:
    return torch.empty(1, dtype=like.dtype, device=like.device)


def _consts(values: Tuple[float, ...], like: Tensor) -> Tensor:
    """values as a tensor in the accumulation dtype on like's device (a float64 scalar argument would be rounded to
    float32), made once per (values, dtype, device): a host-to-device copy per call would wait for the stream."""
    return _device_consts(values, acc_dtype(like.dtype), like.device)


@functools.lru_cache(maxsize=None)
def _device_consts(values: Tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    # never evicted: a captured CUDA graph keeps the address. Made on another thread: CUDA-graph trees
    # (torch.compile mode="reduce-overhead") send the calling thread's allocations to the graph's pool while they
    # warm up, and a cached tensor there fails their liveness check
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(torch.tensor, values, dtype=dtype, device=device).result()


# --------------------------------------------------------------------------------------- scan
def _scan_blocks(T: int, dtype: torch.dtype):
    """Tiles of 4096 elements (BLOCK_T x BLOCK_D), 4 warps. The carry hand-off between the T-tiles of a channel
    is sequential (~1.5 us each on an H100), so BLOCK_T grows with T to keep that chain <= ~64 links:
    B=8,T=4096,D=1024 fp32 forward 0.165 ms with 64 x 64 (128 x 32: 0.166, 32 x 64: 0.237);
    B=1,T=16384,D=256 0.103 ms with 256 x 16 (64 x 64: 0.374)."""
    if INTERPRET:
        return dict(BLOCK_T=4, BLOCK_D=8, num_warps=1)
    if SCAN_BLOCKS is not None:
        block_t, block_d, warps = SCAN_BLOCKS
        return dict(BLOCK_T=block_t, BLOCK_D=block_d, num_warps=warps)
    block_t = min(256, max(64, triton.next_power_of_2(triton.cdiv(T, 64))))
    if dtype == torch.float64:
        return dict(BLOCK_T=block_t, BLOCK_D=2048 // block_t, num_warps=4)
    return dict(BLOCK_T=block_t, BLOCK_D=4096 // block_t, num_warps=4)


SCAN_BLOCKS: Optional[tuple] = None  # (BLOCK_T, BLOCK_D, num_warps) override for tuning


def _scan_launch(a: Tensor, b: Tensor, init: Optional[Tensor], out: Tensor, *, reverse: bool, backward: bool,
                 h: Optional[Tensor] = None, h0: Optional[Tensor] = None, da: Optional[Tensor] = None,
                 dh0: Optional[Tensor] = None) -> None:
    """One launch of the chained scan over a, b: [B, T, D] from init: [B, D] (None: zeros)."""
    B, T, D = a.shape
    cfg = _scan_blocks(T, a.dtype)
    tiles_t = triton.cdiv(T, cfg["BLOCK_T"])
    tiles = tiles_t * B * triton.cdiv(D, cfg["BLOCK_D"])
    ends = torch.empty(tiles_t, B, D, dtype=acc_dtype(a.dtype), device=a.device)
    flags = torch.zeros(1 + tiles, dtype=torch.int32, device=a.device)
    dummy = _dummy(a)
    _scan.scan_kernel[(tiles,)](a, b, dummy if init is None else init, out, dummy if h is None else h,
                                dummy if h0 is None else h0, dummy if da is None else da,
                                dummy if dh0 is None else dh0, ends, flags, B, T, D,
                                REVERSE=reverse, SHIFT_A=backward, HAS_INIT=init is not None, HAS_H0=h0 is not None,
                                BACKWARD=backward, ACC=_tl_acc(a.dtype), **cfg)


def scan_forward(a: Tensor, b: Tensor, h0: Optional[Tensor], reverse: bool) -> Tensor:
    a, b, h0 = _in(a), _in(b), _in(h0)
    _check_device(a)
    h = new_output(a.shape, a)  # [B, T, D]
    _scan_launch(a, b, h0, h, reverse=reverse, backward=False)
    return h


def scan_backward(grad: Tensor, a: Tensor, h: Tensor, h0: Optional[Tensor], reverse: bool):
    grad, a, h, h0 = _in(grad), _in(a), _in(h), _in(h0)
    _check_device(a)
    da, db = new_output(a.shape, a), new_output(a.shape, a)
    dh0 = new_output((a.shape[0], a.shape[2]), a)
    _scan_launch(a, grad, None, db, reverse=not reverse, backward=True, h=h, h0=h0, da=da, dh0=dh0)
    return da, db, dh0


# --------------------------------------------------------------------------------- recurrence
# tl.dot precision for float32 I/O: "3xtf32" (three tf32 tensor-core products, ~fp32 accuracy) or "ieee" (FMA).
# bfloat16/float16 I/O use "tf32" (error far below their own rounding); float64 is always "ieee".
RECURRENCE_FP32_PRECISION = os.environ.get("MMREC_TRITON_FP32_DOT", "3xtf32")
RECURRENCE_STAGES = 2  # software-pipelined z/gamma/grad loads: H100 d=128 backward fp32 10.2 ms vs 12.0 (1 stage)
MAX_HEAD_DIM = 128
MAX_HEAD_DIM_FLOAT64 = 64  # H100: float64 W at d = 128 asked for 360 KB of shared memory (limit 227 KB)


def _rec_config(B: int, d: int, dtype: torch.dtype):
    limit = MAX_HEAD_DIM_FLOAT64 if dtype == torch.float64 and not INTERPRET else MAX_HEAD_DIM
    if d > limit:
        raise ValueError(f"mmrec.recurrence: the triton backend handles head dimensions d = D / H <= {limit} "
                         f"for {dtype}, got d = {d}; use more heads (w: [H, d, d]) or the cuda/cpu backend")
    block_h = max(16, triton.next_power_of_2(d))
    block_b = 16
    if dtype == torch.float64:
        prec = "ieee"
    elif dtype == torch.float32:
        prec = RECURRENCE_FP32_PRECISION
    else:
        prec = "tf32"
    warps = 1 if INTERPRET else (4 if block_h <= 32 else 8)
    cfg = dict(ACC=_tl_acc(dtype), PREC=prec, BLOCK_B=block_b, BLOCK_H=block_h, num_warps=warps)
    if not INTERPRET:
        cfg["num_stages"] = RECURRENCE_STAGES
    return cfg


def _launch_recurrence(kernel, grid, args, variants, d: int, dtype: torch.dtype):
    """Launches the first of `variants` (kernel configs, fastest first) that fits in shared memory; remembers
    per (kernel, d, dtype) which one that was. 3xtf32 keeps two tf32 copies of W (and of W^T in the backward)
    on chip; at d = 128 the backward must re-read W each step, and FMA ("ieee") is the last resort."""
    key = (getattr(kernel, "fn", kernel).__name__, d, dtype)
    start = _REC_VARIANT.get(key, 0)
    for i, cfg in enumerate(variants[start:], start):
        try:
            kernel[grid](*args, **cfg)
        except triton.runtime.errors.OutOfResources:
            if i == len(variants) - 1:
                raise
            continue
        _REC_VARIANT[key] = i
        return


_REC_VARIANT: dict = {}


def _fallbacks(cfg: dict, backward: bool):
    if cfg["PREC"] != "3xtf32":
        return [cfg]
    return ([cfg, {**cfg, "RELOAD_W": True}] if backward else [cfg]) + [{**cfg, "PREC": "ieee"}]


def recurrence_forward(z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor], h0: Optional[Tensor]) -> Tensor:
    z, gamma, w, bias, h0 = _in(z), _in(gamma), _in(w), _in(bias), _in(h0)
    _check_device(z)
    B, T, D = z.shape
    H, d, _ = w.shape
    cfg = _rec_config(B, d, z.dtype)
    dummy = _dummy(z)
    h = new_output(z.shape, z)  # [B, T, D]
    grid = (triton.cdiv(B, cfg["BLOCK_B"]), H)
    args = (z, gamma, w, bias if bias is not None else dummy, h0 if h0 is not None else dummy, h, B, T, D, d)
    cfg = dict(HAS_BIAS=bias is not None, HAS_H0=h0 is not None, **cfg)
    _launch_recurrence(_rec.recurrence_fwd_kernel, grid, args, _fallbacks(cfg, backward=False), d, z.dtype)
    return h


def recurrence_backward(grad: Tensor, z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor],
                        h0: Optional[Tensor], h: Tensor):
    grad, z, gamma, w, bias, h0, h = _in(grad), _in(z), _in(gamma), _in(w), _in(bias), _in(h0), _in(h)
    _check_device(z)
    B, T, D = z.shape
    H, d, _ = w.shape
    cfg = _rec_config(B, d, z.dtype)
    acc = acc_dtype(z.dtype)
    dummy = _dummy(z)
    tiles = triton.cdiv(B, cfg["BLOCK_B"])
    dz, dgamma = new_output(z.shape, z), new_output(z.shape, z)
    dh0 = new_output((B, D), z)
    dw_part = torch.empty(tiles, H, d, d, dtype=acc, device=z.device)
    dbias_part = torch.empty(tiles, D, dtype=acc, device=z.device)
    args = (grad, z, gamma, w, bias if bias is not None else dummy, h0 if h0 is not None else dummy, h,
            dz, dgamma, dh0, dw_part, dbias_part, B, T, D, d, H)
    cfg = dict(HAS_BIAS=bias is not None, HAS_H0=h0 is not None, **cfg)
    _launch_recurrence(_rec.recurrence_bwd_kernel, (tiles, H), args, _fallbacks(cfg, backward=True), d, z.dtype)
    dw = new_output(w.shape, w)
    dw.copy_(dw_part.sum(0))
    dbias = new_output((D,), z)
    dbias.copy_(dbias_part.sum(0))
    return dz, dgamma, dw, dbias, dh0


# ---------------------------------------------------------------------------------------- mdi
def _mdi_config(T: int, N: int, dtype: torch.dtype, backward: bool):
    """[BLOCK_T, BLOCK_N, BLOCK_D] tiles of ~4096 (forward) / ~2048 (backward) elements; BLOCK_T grows with T
    to keep the chain of carry hand-offs short (see _scan_blocks)."""
    block_n = triton.next_power_of_2(N)
    if INTERPRET:
        return dict(BLOCK_T=4, BLOCK_N=block_n, BLOCK_D=8, num_warps=1)
    if backward:  # H100, N=4, B=8, T=4096, D=1024 fp32: 64 x 16 1.50 ms; 32 x 16 2.31; 64 x 32 (8 warps) 2.78
        block_t = min(256, max(32, triton.next_power_of_2(triton.cdiv(T, 64))))
        return dict(BLOCK_T=block_t, BLOCK_N=block_n, BLOCK_D=max(16, 2048 // (block_t * block_n)), num_warps=4)
    # forward: 32 x 32 0.43 ms; 64 x 16 1.10 (64-byte rows of m); 64 x 64 (8 warps) 0.48
    block_t = min(256, max(32, triton.next_power_of_2(triton.cdiv(T, 128))))
    size = 2048 if dtype == torch.float64 else 4096
    return dict(BLOCK_T=block_t, BLOCK_N=block_n, BLOCK_D=max(32, size // (block_t * block_n)), num_warps=4)


def _decay_grads(dmod_part: Tensor, dbase_part: Tensor, mod: Tensor, base: Tensor):
    """dmod and dbase (dtypes of mod and base) from the kernels' partials: dmod_part [tiles over D, B, T, N],
    dbase_part [tiles, B, N, D] or [B, tiles, N, D], summed in a fixed order."""
    dmod, dbase = new_output(mod.shape, mod), new_output(base.shape, base)
    dmod.copy_(dmod_part.sum(0))
    dbase.copy_(dbase_part.sum((0, 1)))
    return dmod, dbase


def _chain_buffers(T: int, B: int, D: int, block_t: int, block_d: int, state: tuple, like: Tensor):
    """ends [n_tiles_T, B, *state] in the accumulation dtype and zeroed int32 flags for a chained scan."""
    tiles_t = triton.cdiv(T, block_t)
    tiles = tiles_t * B * triton.cdiv(D, block_d)
    ends = torch.empty(tiles_t, B, *state, dtype=acc_dtype(like.dtype), device=like.device)
    return ends, torch.zeros(1 + tiles, dtype=torch.int32, device=like.device), tiles


def _bounds(eps: float, like: Tensor) -> Tensor:
    return _consts((eps, 1.0 - eps), like)


def mdi_forward(v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor], eps: float) -> Tensor:
    (v, sv), mod, base, m0 = _rows(v), _in(mod), _in(base), _in(m0)
    _check_device(v)
    B, T, D = v.shape
    N = base.shape[0]
    cfg = _mdi_config(T, N, v.dtype, backward=False)
    m = new_output((B, T, N, D), v)
    ends, flags, tiles = _chain_buffers(T, B, D, cfg["BLOCK_T"], cfg["BLOCK_D"], (N, D), v)
    _mdi.mdi_fwd_kernel[(tiles,)](v, mod, base, m0 if m0 is not None else _dummy(v), m, _bounds(eps, v), ends, flags,
                                  B, T, N, D, sv, HAS_M0=m0 is not None, ACC=_tl_acc(v.dtype), **cfg)
    return m


def mdi_backward(grad: Tensor, v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor], m: Tensor, eps: float):
    grad, v, mod, base, m0, m = _in(grad), _in(v), _in(mod), _in(base), _in(m0), _in(m)
    _check_device(v)
    B, T, D = v.shape
    N = base.shape[0]
    cfg = _mdi_config(T, N, v.dtype, backward=True)
    acc = acc_dtype(v.dtype)
    dv = new_output(v.shape, v)
    dm0 = new_output((B, N, D), v)
    ends, flags, tiles = _chain_buffers(T, B, D, cfg["BLOCK_T"], cfg["BLOCK_D"], (N, D), v)
    dmod_part = torch.empty(triton.cdiv(D, cfg["BLOCK_D"]), B, T, N, dtype=acc, device=v.device)
    dbase_part = torch.empty(ends.shape, dtype=acc, device=v.device)  # [n_tiles_T, B, N, D]
    _mdi.mdi_bwd_kernel[(tiles,)](grad, v, mod, base, m0 if m0 is not None else _dummy(v), m, _bounds(eps, v),
                                  ends, flags, dv, dm0, dmod_part, dbase_part, B, T, N, D,
                                  HAS_M0=m0 is not None, ACC=_tl_acc(v.dtype), **cfg)
    return (dv, *_decay_grads(dmod_part, dbase_part, mod, base), dm0)


# ------------------------------------------------------------------------------ memory_update
def _mu_config(S: int, D: int):
    """[BLOCK_S, BLOCK_D] tiles of the [S, D] state. The interpreter pays per operation, not per element:
    there one tile spans D (tests set MU_BLOCK_D to cover several)."""
    block_s = triton.next_power_of_2(S)
    if MU_BLOCK_D is not None:
        block_d = MU_BLOCK_D
    elif INTERPRET:
        block_d = triton.next_power_of_2(D)
    else:
        # H100, B=16, NC=256, S=64, D=1024 fp32 fwd/bwd: 256 cols 4.42/9.40 ms, 128: 4.44/10.28, 64: 6.03/12.23
        block_d = max(16, min(triton.next_power_of_2(D), 16384 // block_s))
    return dict(BLOCK_S=block_s, BLOCK_D=block_d, num_warps=1 if INTERPRET else MU_WARPS)


MU_BLOCK_D: Optional[int] = None
MU_WARPS = 8


def _scale(D: int, like: Tensor) -> Tensor:
    return _consts((1.0 / math.sqrt(D),), like)


def memory_update_forward(M0: Tensor, key: Tensor, value: Tensor, strength: Tensor) -> Tensor:
    M0, key, value, strength = _in(M0), _in(key), _in(value), _in(strength)
    _check_device(M0)
    B, S, D = M0.shape
    NC = key.shape[1]
    Ms = new_output((B, NC + 1, S, D), M0)
    work = torch.empty(B, S, D, dtype=acc_dtype(M0.dtype), device=M0.device)  # state M_c
    _mu.memory_update_fwd_kernel[(B,)](M0, key, value, strength, Ms, work, _scale(D, M0), NC, S, D,
                                       ACC=_tl_acc(M0.dtype), **_mu_config(S, D))
    return Ms


def memory_update_backward(grad: Tensor, M0: Tensor, key: Tensor, value: Tensor, strength: Tensor, Ms: Tensor):
    grad, M0, key, value, strength, Ms = _in(grad), _in(M0), _in(key), _in(value), _in(strength), _in(Ms)
    _check_device(M0)
    B, S, D = M0.shape
    NC = key.shape[1]
    dM0 = new_output(M0.shape, M0)
    dkey, dvalue = new_output(key.shape, key), new_output(value.shape, value)
    dstrength = new_output(strength.shape, strength)
    work = torch.empty(B, S, D, dtype=acc_dtype(M0.dtype), device=M0.device)  # dL/dM_{c+1}
    _mu.memory_update_bwd_kernel[(B,)](grad, key, value, strength, Ms, work, dM0, dkey, dvalue, dstrength,
                                       _scale(D, M0), NC, S, D, ACC=_tl_acc(M0.dtype), **_mu_config(S, D))
    return dM0, dkey, dvalue, dstrength


# ------------------------------------------------------------------------------ memory_read
# Tokens per program of the forward kernel (a power of two) and its warps; tuning overrides. H200, bf16 B=8 T=2048
# D=768 N=4 S=16 (bench/results/device/run-2026-12-04-h200-a/readcheck.log), forward ms (one call each, +-0.1):
# 0.37 (16 tokens, 1 warp), 0.34-0.46 (32, 1), 0.43 (64, 1), 0.73 (32, 2: a barrier per reduction).
MR_CHUNK = 32
MR_WARPS = 1
MR_CHUNK_INTERPRET = 8  # the interpreter's chunk: the tests' sequences span several chunks and slot chunks
# The backward kernel's (tokens, warps) per program: its tokens are tiles, so its chunk is its own (>= 16 for
# tl.dot). Run a, the op's forward+backward ms: (16, 2) 1.93, (16, 4) 2.05, (32, 4) 1.92, (32, 8) 2.17, (64, 4) 2.17,
# (64, 8) 1.92. Its bank tile [tokens, BLOCK_N, BLOCK_DH] holds 64 values per thread at (32, 4) with N=4, dh=64 (H100
# run 2026-12-06 q: backward kernel 293 us); _mr_bwd_tiles keeps a larger N, dh or dtype at that footprint (not timed).
# ptxas for sm_90 (`python bench/compile_memory_read.py [--bwd-L L --bwd-warps W --dh 128 --dtype fp64]`, the local
# Triton 3.7, the benchmark's launch specialisation), spill stores per thread: bf16 dh=64 836 B at (32, 4), none at
# (16, 4), (16, 8) or (32, 8) (run q's sweep, wall-clock fwd+bwd ms on a host-bound machine: (16, 4) 1.92, (32, 4)
# 1.88, (32, 8) 2.23; not changed without a kernel profile);
# dh=128 3,008 B at (32, 4), 804 at the rule's (16, 4); float64 4,924 B at (32, 4), 1,840 at the rule's (16, 4).
MR_BWD = (32, 4)
MR_BWD_INTERPRET = 16
# bank_bwd_kernel's and carry_map_kernel's (channels, warps) per program; run r, the op's forward+backward ms:
# (32, 1) 2.687, (64, 1) 2.626, (128, 1) 2.889, (128, 2) 2.815, (256, 2) 2.622, (256, 4) 3.028
MR_BANK_BWD = (64, 1)


def _mr_bwd_tiles(block_n: int, block_dh: int, acc_bytes: int) -> Tuple[int, int]:
    """MR_BWD's (tokens, warps), with fewer tokens (down to tl.dot's 16), then more warps (up to 8), while the bank
    tile [tokens, block_n, block_dh] in the accumulation dtype (acc_bytes each) would take more than 256 bytes per
    thread (64 float32 values)."""
    tokens, warps = MR_BWD

    def too_big(tokens: int, warps: int) -> bool:
        return tokens * block_n * block_dh * acc_bytes > 256 * 32 * warps

    while tokens > 16 and too_big(tokens, warps):
        tokens //= 2
    while warps < 8 and too_big(tokens, warps):
        warps *= 2
    return tokens, warps


def _mr_setup(q: Tensor, base: Tensor, Ms: Tensor, n_heads: int, eps: float, norm_eps: float, backward: bool):
    """Blocks (a chunk of BLOCK_L tokens x the head's dh channels x all N banks / all S slots per program) and the
    constants [eps, 1 - eps, norm_eps, 1 / sqrt(dh)] as a tensor (a float64 scalar argument would be rounded). The
    backward's slot and channel blocks are >= 16 (tl.dot); its dots take TF32 for 16-bit inputs (10 mantissa bits
    against their 7-10), IEEE otherwise."""
    D = q.shape[2]
    N, S, dh = base.shape[0], Ms.shape[2], D // n_heads
    if backward:
        block_n, block_dh = triton.next_power_of_2(N), max(16, triton.next_power_of_2(dh))
        acc_bytes = torch.finfo(acc_dtype(q.dtype)).bits // 8
        tokens, warps = (MR_BWD_INTERPRET, 1) if INTERPRET else _mr_bwd_tiles(block_n, block_dh, acc_bytes)
        blocks = dict(BLOCK_L=tokens, BLOCK_N=block_n, BLOCK_S=max(16, triton.next_power_of_2(S)), BLOCK_DH=block_dh,
                      PREC="tf32" if q.dtype in (torch.float16, torch.bfloat16) else "ieee", num_warps=warps)
    else:
        blocks = dict(BLOCK_L=MR_CHUNK_INTERPRET if INTERPRET else MR_CHUNK, BLOCK_N=triton.next_power_of_2(N),
                      BLOCK_S=triton.next_power_of_2(S), BLOCK_DH=triton.next_power_of_2(dh),
                      num_warps=1 if INTERPRET else MR_WARPS)
    consts = _consts((eps, 1.0 - eps, norm_eps, 1.0 / math.sqrt(dh)), q)
    return blocks, consts


def _mr_entries(v: Tensor, sv: int, mod: Tensor, base: Tensor, m0: Optional[Tensor], consts: Tensor, block_l: int,
                m_last: Tensor) -> Tensor:
    """The banks before each time chunk, [B, NC, N, D] in the accumulation dtype, and m_last (v: token stride sv)."""
    B, T, D = v.shape
    N = base.shape[0]
    nc = triton.cdiv(T, block_l)
    acc = acc_dtype(v.dtype)
    ta, tx, entry = (torch.empty(B, nc, N, D, dtype=acc, device=v.device) for _ in range(3))
    block_n = triton.next_power_of_2(N)
    block_c = min(triton.next_power_of_2(D), 8 if INTERPRET else max(64, 4096 // (block_l * block_n)))
    _mr.chunk_transfer_kernel[(B * nc, triton.cdiv(D, block_c))](v, mod, base, consts, ta, tx, T, N, D, nc, sv,
                                                                 ACC=_tl_acc(v.dtype), BLOCK_L=block_l,
                                                                 BLOCK_N=block_n, BLOCK_C=block_c,
                                                                 num_warps=1 if INTERPRET else 4)
    _mr_carry(ta, tx, m0, entry, m_last)
    return entry


def _mr_carry(ta: Tensor, tx: Tensor, init: Optional[Tensor], entry: Tensor, last: Tensor) -> None:
    """entry[:, c] = the state before chunk c of state <- ta[:, c] state + tx[:, c] from `init` (zero if None),
    last = the state after the last chunk; ta, tx, entry: [B, NC, N, D], init, last: [B, N, D]."""
    B, nc, N, D = ta.shape
    # [BLOCK_NC chunks, BLOCK channels] tiles, 4 chunks per tile in the interpreter so that the tests' short
    # sequences span several tiles
    block_nc = 4 if INTERPRET else min(64, triton.next_power_of_2(nc))
    block = 64 if INTERPRET else 4096 // block_nc
    _mr.carry_kernel[(B, triton.cdiv(N * D, block))](ta, tx, _dummy(ta) if init is None else init, entry, last, nc,
                                                      N * D, HAS_INIT=init is not None, ACC=_tl_acc(ta.dtype),
                                                      BLOCK_NC=block_nc, BLOCK=block, num_warps=1 if INTERPRET else 4)


def _slot_chunks_per_time_chunk(block_l: int, chunk_len: int, k0: int) -> int:
    """How many slot chunks the BLOCK_L tokens of one time chunk can read: one when the slot chunks are whole
    time chunks (chunk_len and k0 multiples of BLOCK_L), else up to (BLOCK_L - 1) // chunk_len + 2."""
    if chunk_len % block_l == 0:
        return 1 if k0 % block_l == 0 else 2
    return (block_l - 1) // chunk_len + 2


def memory_read_forward(q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps):
    (q, sq), (v, sv), (Ms, sms) = _rows(q), _rows(v), _batch_rows(Ms)   # views of the in-projection, no copy
    h, mod, base, m0 = (_in(x) for x in (h, mod, base, m0))
    _check_device(q)
    B, T, D = q.shape
    N, NS, S = base.shape[0], Ms.shape[1], Ms.shape[2]
    r, m_last = new_output(q.shape, q), new_output((B, N, D), q)  # [B, T, D], [B, N, D]
    blocks, consts = _mr_setup(q, base, Ms, n_heads, eps, norm_eps, backward=False)
    entry = _mr_entries(v, sv, mod, base, m0, consts, blocks["BLOCK_L"], m_last)
    nc = entry.shape[1]
    _mr.memory_read_fwd_kernel[(B * n_heads, nc)](q, h, v, mod, base, Ms, entry, r, consts, T, N, D, D // n_heads,
                                                  NS, S, n_heads, k0, chunk_len, nc, sq, sv, sms, ACC=_tl_acc(q.dtype),
                                                  **blocks)
    return r, m_last


def memory_read_backward(grad_r, grad_m, q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps):
    """The read's backward over the banks m (mdi's forward, freed on return): memory_read_bwd_kernel gives dq, dh,
    the banks' item gradient dxm and the slots' parts; carry_map_kernel each chunk's map of the banks' reverse
    carry, carry_kernel runs the carry from the end of time, then bank_bwd_kernel walks each chunk backwards for dv,
    dmod, dbase (dm0: the carry past t = 0)."""
    (q, sq), (v, sv), (Ms, sms) = _rows(q), _rows(v), _batch_rows(Ms)
    grad_r, grad_m, h, mod, base, m0 = (_in(x) for x in (grad_r, grad_m, h, mod, base, m0))
    _check_device(q)
    B, T, D = q.shape
    N, NS, S = base.shape[0], Ms.shape[1], Ms.shape[2]
    blocks, consts = _mr_setup(q, base, Ms, n_heads, eps, norm_eps, backward=True)
    block_l = blocks["BLOCK_L"]
    nc = triton.cdiv(T, block_l)
    J = _slot_chunks_per_time_chunk(block_l, chunk_len, k0)
    acc = acc_dtype(q.dtype)
    m = mdi_forward(v, mod, base, m0, eps)                                     # [B, T, N, D]
    dxm = torch.empty(B, T, N, D, dtype=q.dtype, device=q.device)   # bf16 in training: half the bytes of float32
    ta, tx, carry = (torch.empty(B, nc, N, D, dtype=acc, device=q.device) for _ in range(3))
    dms_part = torch.empty(B, nc, J, S, D, dtype=acc, device=q.device)
    dq, dh = new_output(q.shape, q), new_output(q.shape, q)
    _mr.memory_read_bwd_kernel[(B * n_heads, nc)](grad_r, _dummy(q) if grad_m is None else grad_m, q, h, m, Ms,
                                                  consts, dq, dh, dxm, dms_part, T, N, D, D // n_heads, NS, S,
                                                  n_heads, k0, chunk_len, nc, J, sq, sms, HAS_GM=grad_m is not None,
                                                  ACC=_tl_acc(q.dtype), **blocks)
    block_c, bank_warps = (8, 1) if INTERPRET else MR_BANK_BWD
    bank_blocks = dict(ACC=_tl_acc(q.dtype), BLOCK_L=block_l, BLOCK_N=blocks["BLOCK_N"], BLOCK_C=block_c,
                       num_warps=bank_warps)
    _mr.carry_map_kernel[(B * nc, triton.cdiv(D, block_c))](dxm, mod, base, consts, ta, tx, T, N, D, nc,
                                                            **bank_blocks)
    dm0 = new_output((B, N, D), v)
    _mr_carry(ta, tx, None, carry, dm0)
    dmod_part = torch.empty(triton.cdiv(D, block_c), B, T, N, dtype=acc, device=q.device)
    dbase_part = torch.empty(B, nc, N, D, dtype=acc, device=q.device)
    dv = new_output(v.shape, v)
    _mr.bank_bwd_kernel[(B * triton.cdiv(D, block_c), nc)](dxm, v, mod, base, _dummy(v) if m0 is None else m0, m,
                                                           consts, carry, dv, dmod_part, dbase_part, B, T, N, D, nc,
                                                           sv, HAS_M0=m0 is not None, **bank_blocks)
    dmod, dbase = _decay_grads(dmod_part, dbase_part, mod, base)
    dMs = new_output(Ms.shape, q)
    block = 64 if INTERPRET else 512
    _mr.dms_reduce_kernel[(B * NS, triton.cdiv(S * D, block))](dms_part, dMs, T, S, D, NS, nc, J, k0, chunk_len,
                                                               block_l, BLOCK=block, num_warps=1 if INTERPRET else 4)
    return dq, dh, dv, dmod, dbase, dMs, dm0


TABLE: Dict[str, Wrappers] = {op: Wrappers(globals()[f"{op}_forward"], globals()[f"{op}_backward"])
                              for op in ("scan", "recurrence", "mdi", "memory_update", "memory_read")}
