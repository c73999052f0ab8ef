"""The `cpu` and `cuda` backends: one wrapper per op and direction for both devices. Each hands contiguous tensors
and freshly allocated outputs to mmrec_ops._C (DLPack, zero-copy), whose binding runs the kernel of the tensors'
device: the C++ CPU kernel, or the CUDA kernel on the current stream of the tensors' device."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor
from torch.utils.dlpack import to_dlpack as _to_dlpack

from ..outputs import new_output
from . import Wrappers

try:
    from .. import _C
    IMPORT_ERROR: Optional[BaseException] = None
except ImportError as exc:  # a source tree without a build
    _C = None
    IMPORT_ERROR = exc


def _in(x: Optional[Tensor]) -> Optional[Tensor]:
    return None if x is None else x.detach().contiguous()


def _run(kernel, like: Tensor, *args) -> None:
    """kernel(*args, stream): on a CUDA tensor's device and its current stream, else on the CPU. CPU tensors cross
    as DLPack capsules made by to_dlpack: 0.3 us each against 2.3 us for the binding's call of Tensor.__dlpack__
    (18 tensors in a recurrence forward+backward)."""
    if like.is_cuda:
        with torch.cuda.device(like.device):
            kernel(*args, torch.cuda.current_stream(like.device).cuda_stream)
    else:
        kernel(*(_to_dlpack(x) if isinstance(x, Tensor) else x for x in args), 0)


def scan_forward(a: Tensor, b: Tensor, h0: Optional[Tensor], reverse: bool) -> Tensor:
    a, b, h0 = _in(a), _in(b), _in(h0)
    h = new_output(a.shape, a)  # [B, T, D]
    _run(_C.scan_fwd, a, a, b, h0, h, reverse)
    return h


def scan_backward(grad: Tensor, a: Tensor, h: Tensor, h0: Optional[Tensor], reverse: bool):
    grad, a, h, h0 = _in(grad), _in(a), _in(h), _in(h0)
    da, db, dh0 = new_output(a.shape, a), new_output(a.shape, a), new_output((a.shape[0], a.shape[2]), a)
    _run(_C.scan_bwd, a, grad, a, h, h0, da, db, dh0, reverse)
    return da, db, dh0  # [B, T, D], [B, T, D], [B, D]


def recurrence_forward(z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor], h0: Optional[Tensor]) -> Tensor:
    z, gamma, w, bias, h0 = _in(z), _in(gamma), _in(w), _in(bias), _in(h0)
    h = new_output(z.shape, z)  # [B, T, D]
    _run(_C.recurrence_fwd, z, z, gamma, w, bias, h0, h)
    return h


def recurrence_backward(grad: Tensor, z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor],
                        h0: Optional[Tensor], h: Tensor):
    grad, z, gamma, w, bias, h0, h = _in(grad), _in(z), _in(gamma), _in(w), _in(bias), _in(h0), _in(h)
    B, _, D = z.shape
    dz, dgamma, dw = new_output(z.shape, z), new_output(z.shape, z), new_output(w.shape, w)
    dbias, dh0 = new_output((D,), z), new_output((B, D), z)
    _run(_C.recurrence_bwd, z, grad, z, gamma, w, bias, h0, h, dz, dgamma, dw, dbias, dh0)
    return dz, dgamma, dw, dbias, dh0  # [B, T, D] x 2, [H, d, d], [D], [B, D]


def mdi_forward(v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor], eps: float) -> Tensor:
    v, mod, base, m0 = _in(v), _in(mod), _in(base), _in(m0)
    B, T, D = v.shape
    m = new_output((B, T, base.shape[0], D), v)  # [B, T, N, D]
    _run(_C.mdi_fwd, v, v, mod, base, m0, m, float(eps))
    return m


def mdi_backward(grad: Tensor, v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor], m: Tensor, eps: float):
    grad, v, mod, base, m0, m = _in(grad), _in(v), _in(mod), _in(base), _in(m0), _in(m)
    dv, dmod, dbase = new_output(v.shape, v), new_output(mod.shape, v), new_output(base.shape, v)
    dm0 = new_output((v.shape[0], base.shape[0], v.shape[2]), v)  # [B, N, D]
    _run(_C.mdi_bwd, v, grad, v, mod, base, m0, m, dv, dmod, dbase, dm0, float(eps))
    return dv, dmod, dbase, dm0


def memory_update_forward(M0: Tensor, key: Tensor, value: Tensor, strength: Tensor) -> Tensor:
    M0, key, value, strength = _in(M0), _in(key), _in(value), _in(strength)
    B, S, D = M0.shape
    Ms = new_output((B, key.shape[1] + 1, S, D), M0)  # [B, NC + 1, S, D]
    _run(_C.memory_update_fwd, M0, M0, key, value, strength, Ms)
    return Ms


def memory_update_backward(grad: Tensor, M0: Tensor, key: Tensor, value: Tensor, strength: Tensor, Ms: Tensor):
    grad, M0, key, value, strength, Ms = _in(grad), _in(M0), _in(key), _in(value), _in(strength), _in(Ms)
    dM0, dkey = new_output(M0.shape, M0), new_output(key.shape, M0)
    dvalue, dstrength = new_output(value.shape, M0), new_output(strength.shape, M0)
    _run(_C.memory_update_bwd, M0, grad, M0, key, value, strength, Ms, dM0, dkey, dvalue, dstrength)
    return dM0, dkey, dvalue, dstrength


def memory_read_forward(q: Tensor, h: Tensor, v: Tensor, mod: Tensor, base: Tensor, Ms: Tensor, m0: Optional[Tensor],
                        k0: int, chunk_len: int, n_heads: int, eps: float, norm_eps: float):
    q, h, v, mod, base, Ms, m0 = (_in(x) for x in (q, h, v, mod, base, Ms, m0))
    B, _, D = q.shape
    r, m_last = new_output(q.shape, q), new_output((B, base.shape[0], D), q)  # [B, T, D], [B, N, D]
    _run(_C.memory_read_fwd, q, q, h, v, mod, base, Ms, m0, r, m_last, k0, chunk_len, n_heads, float(eps),
         float(norm_eps))
    return r, m_last


def memory_read_backward(grad_r: Tensor, grad_m: Tensor, q: Tensor, h: Tensor, v: Tensor, mod: Tensor, base: Tensor,
                         Ms: Tensor, m0: Optional[Tensor], k0: int, chunk_len: int, n_heads: int, eps: float,
                         norm_eps: float):
    grad_r, grad_m, q, h, v, mod, base, Ms, m0 = (_in(x) for x in (grad_r, grad_m, q, h, v, mod, base, Ms, m0))
    dq, dh, dv = (new_output(q.shape, q) for _ in range(3))  # [B, T, D]
    dmod, dbase, dMs = new_output(mod.shape, q), new_output(base.shape, q), new_output(Ms.shape, q)
    dm0 = new_output(grad_m.shape, q)  # [B, N, D]
    _run(_C.memory_read_bwd, q, grad_r, grad_m, q, h, v, mod, base, Ms, m0, dq, dh, dv, dmod, dbase, dMs, dm0, k0,
         chunk_len, n_heads, float(eps), float(norm_eps))
    return dq, dh, dv, dmod, dbase, dMs, dm0


TABLE: Dict[str, Wrappers] = {op: Wrappers(globals()[f"{op}_forward"], globals()[f"{op}_backward"])
                              for op in ("scan", "recurrence", "mdi", "memory_update", "memory_read")}


# ------------------------------------------------------------------------------------------- decode step
def has_decode_step_cpu() -> bool:
    """True if this build of mmrec_ops._C has the CPU one-token step kernel (kernels/cpu/decode_step.cpp)."""
    return _C is not None and hasattr(_C, "DecodeModelCpu")


def decode_step_cpu(embed: Tensor, norm_w: Tensor, lm_head: Tensor, blocks, *, n_heads: int, n_read_heads: int,
                    n_slots: int, chunk_len: int, eps: float, mdi_eps: float, linear: bool):
    """MMRecLM's weights packed for the one-token step on CPU float32/float64 tensors: embed, lm_head [V, D], norm_w
    [D], and per block a dict of norm_in, w_in, b_in, w_g, b_g (nonlinear), base, w_key, w_a, b_a, w_o, norm_ffn,
    w_up, w_down in the nn.Linear layouts (copied: later changes to them are not seen). Its
    ``bind(mem, chunk_sum, pos)`` takes a state's buffers (mem[l] [B, 1 + N + S, D], chunk_sum[l] [B, D], pos [B]
    int64, updated in place) and returns an object whose ``step(tokens [B] int64, logits [B, V], threads)`` runs
    one token: one C++ call, no torch dispatch."""
    if not has_decode_step_cpu():
        raise RuntimeError(f"mmrec_ops._C has no CPU decode step ({IMPORT_ERROR or 'an older build'})")
    plain = [{k: _in(v) for k, v in b.items() if v is not None} for b in blocks]
    return _C.DecodeModelCpu(_in(embed), _in(norm_w), _in(lm_head), plain, n_heads, n_read_heads, n_slots, chunk_len,
                             float(eps), float(mdi_eps), bool(linear))
