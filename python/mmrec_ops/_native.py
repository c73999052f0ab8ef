"""The `cpu` and `cuda` backends: thin wrappers that hand contiguous tensors to mmrec_ops._C
(DLPack, zero-copy) with outputs allocated here and the current CUDA stream."""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor

from . import backends

try:
    from . import _C as C
    IMPORT_ERROR: Optional[BaseException] = None
except ImportError as exc:  # running from a source tree without a build
    C = None
    IMPORT_ERROR = exc

# Ops with a kernel per device; an op missing here is served by the reference on that device.
CPU_OPS = ("scan", "recurrence", "mdi", "memory_update", "memory_read")
CUDA_OPS = ("scan", "memory_read")


def _in(x: Optional[Tensor]) -> Optional[Tensor]:
    return None if x is None else x.detach().contiguous()


def _stream(x: Tensor) -> int:
    return torch.cuda.current_stream(x.device).cuda_stream if x.is_cuda else 0


def scan_forward(a: Tensor, b: Tensor, h0: Optional[Tensor], reverse: bool) -> Tensor:
    a, b, h0 = _in(a), _in(b), _in(h0)
    h = backends.new_output(a.shape, a)  # [B, T, D]
    C.scan_fwd(a, b, h0, h, reverse, _stream(a))
    return h


def scan_backward(grad: Tensor, a: Tensor, h: Tensor, h0: Optional[Tensor], reverse: bool):
    grad, a, h, h0 = _in(grad), _in(a), _in(h), _in(h0)
    da, db = backends.new_output(a.shape, a), backends.new_output(a.shape, a)
    dh0 = backends.new_output((a.shape[0], a.shape[2]), a)
    C.scan_bwd(a, h, h0, grad, da, db, dh0, reverse, _stream(a))
    return da, db, dh0


def recurrence_forward(z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor], h0: Optional[Tensor]) -> Tensor:
    z, gamma, w, bias, h0 = _in(z), _in(gamma), _in(w), _in(bias), _in(h0)
    h = backends.new_output(z.shape, z)  # [B, T, D]
    C.recurrence_fwd(z, gamma, w, bias, h0, h, _stream(z))
    return h


def recurrence_backward(grad: Tensor, z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor],
                        h0: Optional[Tensor], h: Tensor):
    grad, z, gamma, w, bias, h0, h = _in(grad), _in(z), _in(gamma), _in(w), _in(bias), _in(h0), _in(h)
    B, _, D = z.shape
    dz, dgamma = backends.new_output(z.shape, z), backends.new_output(z.shape, z)  # [B, T, D]
    dw = backends.new_output(w.shape, w)  # [H, d, d]
    dbias, dh0 = backends.new_output((D,), z), backends.new_output((B, D), z)
    C.recurrence_bwd(grad, z, gamma, w, bias, h0, h, dz, dgamma, dw, dbias, dh0, _stream(z))
    return dz, dgamma, dw, dbias, dh0


def mdi_forward(v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor], eps: float) -> Tensor:
    v, mod, base, m0 = _in(v), _in(mod), _in(base), _in(m0)
    B, T, D = v.shape
    m = backends.new_output((B, T, base.shape[0], D), v)  # [B, T, N, D]
    C.mdi_fwd(v, mod, base, m0, m, float(eps), _stream(v))
    return m


def mdi_backward(grad: Tensor, v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor], m: Tensor, eps: float):
    grad, v, mod, base, m0, m = _in(grad), _in(v), _in(mod), _in(base), _in(m0), _in(m)
    dv, dmod, dbase = backends.new_output(v.shape, v), backends.new_output(mod.shape, v), \
        backends.new_output(base.shape, v)
    dm0 = backends.new_output((v.shape[0], base.shape[0], v.shape[2]), v)  # [B, N, D]
    C.mdi_bwd(v, mod, base, m0, m, grad, dv, dmod, dbase, dm0, float(eps), _stream(v))
    return dv, dmod, dbase, dm0


def memory_update_forward(M0: Tensor, key: Tensor, value: Tensor, strength: Tensor) -> Tensor:
    M0, key, value, strength = _in(M0), _in(key), _in(value), _in(strength)
    B, S, D = M0.shape
    Ms = backends.new_output((B, key.shape[1] + 1, S, D), M0)  # [B, NC + 1, S, D]
    C.memory_update_fwd(M0, key, value, strength, Ms, _stream(M0))
    return Ms


def memory_update_backward(grad: Tensor, M0: Tensor, key: Tensor, value: Tensor, strength: Tensor, Ms: Tensor):
    grad, M0, key, value, strength, Ms = _in(grad), _in(M0), _in(key), _in(value), _in(strength), _in(Ms)
    dM0, dkey, dvalue = backends.new_output(M0.shape, M0), backends.new_output(key.shape, M0), \
        backends.new_output(value.shape, M0)
    dstrength = backends.new_output(strength.shape, M0)
    C.memory_update_bwd(M0, key, value, strength, Ms, grad, dM0, dkey, dvalue, dstrength, _stream(M0))
    return dM0, dkey, dvalue, dstrength


def _on_device(x: Tensor):
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def memory_read_forward(q: Tensor, h: Tensor, v: Tensor, mod: Tensor, base: Tensor, Ms: Tensor, m0: Optional[Tensor],
                        k0: int, chunk_len: int, n_heads: int, eps: float, norm_eps: float):
    q, h, v, mod, base, Ms, m0 = (_in(x) for x in (q, h, v, mod, base, Ms, m0))
    B, _, D = q.shape
    r, m_last = backends.new_output(q.shape, q), backends.new_output((B, base.shape[0], D), q)  # [B, T, D], [B, N, D]
    with _on_device(q):
        C.memory_read_fwd(q, h, v, mod, base, Ms, m0, r, m_last, k0, chunk_len, n_heads, float(eps), float(norm_eps),
                          _stream(q))
    return r, m_last


def memory_read_backward(grad_r: Tensor, grad_m: Tensor, q: Tensor, h: Tensor, v: Tensor, mod: Tensor, base: Tensor,
                         Ms: Tensor, m0: Optional[Tensor], k0: int, chunk_len: int, n_heads: int, eps: float,
                         norm_eps: float):
    grad_r, grad_m, q, h, v, mod, base, Ms, m0 = (_in(x) for x in (grad_r, grad_m, q, h, v, mod, base, Ms, m0))
    dq, dh, dv = (backends.new_output(q.shape, q) for _ in range(3))  # [B, T, D]
    dmod, dbase, dMs = backends.new_output(mod.shape, q), backends.new_output(base.shape, q), \
        backends.new_output(Ms.shape, q)
    dm0 = backends.new_output(grad_m.shape, q)  # [B, N, D]
    with _on_device(q):
        C.memory_read_bwd(grad_r, grad_m, q, h, v, mod, base, Ms, m0, dq, dh, dv, dmod, dbase, dMs, dm0, k0, chunk_len,
                          n_heads, float(eps), float(norm_eps), _stream(q))
    return dq, dh, dv, dmod, dbase, dMs, dm0


_FUNCS = {
    "scan": (scan_forward, scan_backward),
    "recurrence": (recurrence_forward, recurrence_backward),
    "mdi": (mdi_forward, mdi_backward),
    "memory_update": (memory_update_forward, memory_update_backward),
    "memory_read": (memory_read_forward, memory_read_backward),
}


def register_all() -> None:
    for backend_name, ops in (("cpu", CPU_OPS), ("cuda", CUDA_OPS)):
        for op in ops:
            backends.register(backend_name, op, *_FUNCS[op])
    if C is not None and C.has_cuda:
        from . import _cuda  # recurrence, mdi, memory_update on CUDA
        _cuda.register_all()
