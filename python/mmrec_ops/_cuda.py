"""The `cuda` backend for recurrence, mdi and memory_update (scan lives in _native.py): thin wrappers that hand
contiguous tensors to mmrec_ops._C's CUDA kernels with outputs allocated here and the current stream."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import backends
from ._native import C, _in, _stream

CUDA_OPS = ("recurrence", "mdi", "memory_update")


def recurrence_forward(z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor], h0: Optional[Tensor]) -> Tensor:
    z, gamma, w, bias, h0 = _in(z), _in(gamma), _in(w), _in(bias), _in(h0)
    h = backends.new_output(z.shape, z)  # [B, T, D]
    with torch.cuda.device(z.device):
        C.recurrence_fwd_cuda(z, gamma, w, bias, h0, h, _stream(z))
    return h


def recurrence_backward(grad: Tensor, z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor],
                        h0: Optional[Tensor], h: Tensor):
    grad, z, gamma, w, bias, h0, h = _in(grad), _in(z), _in(gamma), _in(w), _in(bias), _in(h0), _in(h)
    B, _, D = z.shape
    dz, dgamma = backends.new_output(z.shape, z), backends.new_output(z.shape, z)
    dw = backends.new_output(w.shape, w)            # [H, d, d]
    dbias = backends.new_output((D,), z)
    dh0 = backends.new_output((B, D), z)
    with torch.cuda.device(z.device):
        C.recurrence_bwd_cuda(grad, z, gamma, w, bias, h0, h, dz, dgamma, dw, dbias, dh0, _stream(z))
    return dz, dgamma, dw, dbias, dh0


def mdi_forward(v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor], eps: float) -> Tensor:
    v, mod, base, m0 = _in(v), _in(mod), _in(base), _in(m0)
    B, T, D = v.shape
    m = backends.new_output((B, T, base.shape[0], D), v)  # [B, T, N, D]
    with torch.cuda.device(v.device):
        C.mdi_fwd_cuda(v, mod, base, m0, m, float(eps), _stream(v))
    return m


def mdi_backward(grad: Tensor, v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor], m: Tensor, eps: float):
    grad, v, mod, base, m0, m = _in(grad), _in(v), _in(mod), _in(base), _in(m0), _in(m)
    B, _, D = v.shape
    dv, dmod, dbase = backends.new_output(v.shape, v), backends.new_output(mod.shape, v), \
        backends.new_output(base.shape, v)
    dm0 = backends.new_output((B, base.shape[0], D), v)  # [B, N, D]
    with torch.cuda.device(v.device):
        C.mdi_bwd_cuda(grad, v, mod, base, m0, m, dv, dmod, dbase, dm0, float(eps), _stream(v))
    return dv, dmod, dbase, dm0


def memory_update_forward(M0: Tensor, key: Tensor, value: Tensor, strength: Tensor) -> Tensor:
    M0, key, value, strength = _in(M0), _in(key), _in(value), _in(strength)
    B, S, D = M0.shape
    Ms = backends.new_output((B, key.shape[1] + 1, S, D), M0)  # [B, NC + 1, S, D]
    with torch.cuda.device(M0.device):
        C.memory_update_fwd_cuda(M0, key, value, strength, Ms, _stream(M0))
    return Ms


def memory_update_backward(grad: Tensor, M0: Tensor, key: Tensor, value: Tensor, strength: Tensor, Ms: Tensor):
    grad, M0, key, value, strength, Ms = _in(grad), _in(M0), _in(key), _in(value), _in(strength), _in(Ms)
    dM0, dkey = backends.new_output(M0.shape, M0), backends.new_output(key.shape, M0)
    dvalue, dstrength = backends.new_output(value.shape, M0), backends.new_output(strength.shape, M0)
    with torch.cuda.device(M0.device):
        C.memory_update_bwd_cuda(grad, M0, key, value, strength, Ms, dM0, dkey, dvalue, dstrength, _stream(M0))
    return dM0, dkey, dvalue, dstrength


_FUNCS = {op: (globals()[f"{op}_forward"], globals()[f"{op}_backward"]) for op in CUDA_OPS}


def register_all() -> None:
    for op in CUDA_OPS:
        backends.register("cuda", op, *_FUNCS[op])
