"""The gradients every backend is held to, written by hand from docs/SPEC.md in float64: each op's forward
recurrence as a plain loop (its output, and the states the backward needs) and its backward as the SPEC writes
it (mdi's and memory_update's by the chain rule through their SPEC forward, the clamp's gradient as
torch.clamp's). Nothing here calls mmrec_ops or autograd, so a backend's backward (the `ref` one included) is
never compared with itself. Each function returns (output, gradients of <output, G> w.r.t. every tensor input)."""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
from torch import Tensor


def _f64(x: Optional[Tensor]) -> Optional[Tensor]:
    return None if x is None else x.detach().to("cpu", torch.float64)


def _sigmoid(x: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-x))


def scan(G: Tensor, a: Tensor, b: Tensor, h0: Optional[Tensor], reverse: bool):
    """h_t = a_t h_{t-1} + b_t; delta_t = G_t + a_{t+1} delta_{t+1}; da_t = delta_t h_{t-1}; db = delta;
    dh0 = a_0 delta_0. reverse runs the same with time mirrored. All [B, T, D] but dh0 [B, D]."""
    if reverse:
        h, (da, db, dh0) = scan(G.flip(1), a.flip(1), b.flip(1), h0, False)
        return h.flip(1), (da.flip(1), db.flip(1), dh0)
    B, T, D = a.shape
    h_prev, hs = torch.zeros(B, T, D, dtype=a.dtype), torch.zeros(B, T, D, dtype=a.dtype)  # h_{t-1}, h_t
    h = torch.zeros(B, D, dtype=a.dtype) if h0 is None else h0
    for t in range(T):
        h_prev[:, t] = h
        h = hs[:, t] = a[:, t] * h + b[:, t]
    delta = torch.zeros(B, T, D, dtype=a.dtype)
    carry = torch.zeros(B, D, dtype=a.dtype)  # a_{t+1} delta_{t+1}
    for t in range(T - 1, -1, -1):
        delta[:, t] = G[:, t] + carry
        carry = a[:, t] * delta[:, t]
    return hs, (delta * h_prev, delta, carry)  # carry = a_0 delta_0


def recurrence(G: Tensor, z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor], h0: Optional[Tensor]):
    """h_t = z_t s_t + gamma_t h_{t-1}, s_t = sigma(W h_{t-1} + bias); SPEC.md's backward-through-time:
    delta_t = G_t + gamma_{t+1} delta_{t+1} + W^T e_{t+1}, e_t = delta_t z_t s_t (1 - s_t), dz = delta s,
    dgamma_t = delta_t h_{t-1}, dbias = sum e, dW[k] = sum e^k (h_{t-1}^k)^T, dh0 = gamma_0 delta_0 + W^T e_0."""
    B, T, D = z.shape
    H, d, _ = w.shape
    bias = torch.zeros(D, dtype=z.dtype) if bias is None else bias
    h = torch.zeros(B, D, dtype=z.dtype) if h0 is None else h0

    def W(x):  # per head: w[k] @ x^k
        return torch.einsum("kij,bkj->bki", w, x.view(B, H, d)).reshape(B, D)

    def Wt(x):  # per head: w[k]^T @ x^k
        return torch.einsum("kij,bki->bkj", w, x.view(B, H, d)).reshape(B, D)

    hs, ss = [], []  # h_{t-1}, s_t
    for t in range(T):
        hs.append(h)
        s = _sigmoid(W(h) + bias)
        ss.append(s)
        h = z[:, t] * s + gamma[:, t] * h
    out = torch.stack(hs[1:] + [h], 1)
    dz, dgamma = torch.zeros_like(z), torch.zeros_like(z)
    dw, dbias = torch.zeros_like(w), torch.zeros(D, dtype=z.dtype)
    carry = torch.zeros(B, D, dtype=z.dtype)  # gamma_{t+1} delta_{t+1} + W^T e_{t+1}
    for t in range(T - 1, -1, -1):
        delta = G[:, t] + carry
        e = delta * z[:, t] * ss[t] * (1 - ss[t])
        dz[:, t], dgamma[:, t] = delta * ss[t], delta * hs[t]
        dbias += e.sum(0)
        dw += torch.einsum("bki,bkj->kij", e.view(B, H, d), hs[t].view(B, H, d))
        carry = gamma[:, t] * delta + Wt(e)
    return out, (dz, dgamma, dw, dbias, carry)  # carry = dh0


def mdi(G: Tensor, v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor], eps: float):
    """x = sigma(base) sigma(mod), gamma = clamp(x, eps, 1 - eps), m_t = gamma_t m_{t-1} + (1 - gamma_t) v_t.
    delta_t = G_t + gamma_{t+1} delta_{t+1}; dv_t = sum_n delta_t (1 - gamma_t); dgamma_t = delta_t (m_{t-1} - v_t),
    passed to x where eps <= x <= 1 - eps; dmod, dbase through the two sigmoids; dm0 = gamma_0 delta_0."""
    B, T, D = v.shape
    N = base.shape[0]
    sb, sm = _sigmoid(base), _sigmoid(mod)  # [N, D], [B, T, N]
    x = sb[None, None] * sm[..., None]  # [B, T, N, D]
    gamma = x.clamp(eps, 1 - eps)
    passed = (x >= eps) & (x <= 1 - eps)
    m = torch.zeros(B, N, D, dtype=v.dtype) if m0 is None else m0
    m_prev, ms = torch.zeros(B, T, N, D, dtype=v.dtype), torch.zeros(B, T, N, D, dtype=v.dtype)
    for t in range(T):
        m_prev[:, t] = m
        m = ms[:, t] = gamma[:, t] * m + (1 - gamma[:, t]) * v[:, t, None]
    delta = torch.zeros(B, T, N, D, dtype=v.dtype)
    carry = torch.zeros(B, N, D, dtype=v.dtype)
    for t in range(T - 1, -1, -1):
        delta[:, t] = G[:, t] + carry
        carry = gamma[:, t] * delta[:, t]
    dv = (delta * (1 - gamma)).sum(2)
    dx = torch.where(passed, delta * (m_prev - v[:, :, None]), torch.zeros_like(x))
    dmod = (dx * sb).sum(3) * sm * (1 - sm)
    dbase = (dx * sm[..., None]).sum((0, 1)) * sb * (1 - sb)
    return ms, (dv, dmod, dbase, carry)  # carry = dm0


def memory_update(G: Tensor, M0: Tensor, key: Tensor, value: Tensor, strength: Tensor):
    """w_c = softmax_j(<M_c[j], k_c> / sqrt(D)), M_{c+1}[j] = M_c[j] + s_c w_c[j] (v_c - M_c[j]). With A = dL/dM_{c+1}:
    e_j = <A_j, v_c - M_c[j]>, ds_c = sum_j w_j e_j, dscore_j = w_j s_c (e_j - ds_c), dv_c = s_c sum_j w_j A_j,
    dk_c = sum_j dscore_j M_c[j] / sqrt(D), dL/dM_c[j] = G_c[j] + (1 - s_c w_j) A_j + dscore_j k_c / sqrt(D)."""
    B, S, D = M0.shape
    NC = key.shape[1]
    scale = 1.0 / math.sqrt(D)
    Ms, ws = [M0], []
    for c in range(NC):
        M = Ms[-1]
        w = torch.softmax(torch.einsum("bsd,bd->bs", M, key[:, c]) * scale, dim=-1)  # [B, S]
        ws.append(w)
        Ms.append(M + strength[:, c, None, None] * w[..., None] * (value[:, c, None] - M))
    dkey, dvalue, dstrength = torch.zeros_like(key), torch.zeros_like(value), torch.zeros_like(strength)
    A = G[:, NC]
    for c in range(NC - 1, -1, -1):
        M, w, s = Ms[c], ws[c], strength[:, c, None]
        e = torch.einsum("bsd,bsd->bs", A, value[:, c, None] - M)
        dstrength[:, c] = (w * e).sum(1)
        dscore = w * s * (e - dstrength[:, c, None])
        dvalue[:, c] = s * torch.einsum("bs,bsd->bd", w, A)
        dkey[:, c] = torch.einsum("bs,bsd->bd", dscore, M) * scale
        A = G[:, c] + (1 - s * w)[..., None] * A + dscore[..., None] * key[:, c, None] * scale
    return torch.stack(Ms, 1), (A, dkey, dvalue, dstrength)  # A = dM0


_OPS = {"scan": scan, "recurrence": recurrence, "mdi": mdi, "memory_update": memory_update}
_DEFAULTS = {"scan": (None, None, None, False), "recurrence": (None,) * 5, "mdi": (None,) * 4 + (1e-6,),
             "memory_update": (None,) * 4}  # the ops' signatures: optional arguments and their defaults


def cotangent(shape: Sequence[int], seed: int) -> Tensor:
    """The fixed random dL/d(output) that tests/ops/common.grads uses for `seed` (float64, CPU)."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def gradients(op: str, args: Sequence, out_shape: Sequence[int], seed: int = 0) -> List[Tensor]:
    """SPEC gradients of <op(*args), cotangent(out_shape, seed)> w.r.t. each tensor in `args` (those given, in
    order: None arguments are skipped), float64 on the CPU."""
    full = tuple(args) + _DEFAULTS[op][len(args):]
    _, grads = _OPS[op](cotangent(out_shape, seed), *(_f64(x) if isinstance(x, Tensor) else x for x in full))
    return [g for g, x in zip(grads, full) if x is not None]  # one per tensor argument (grads stop before eps etc.)


def output(op: str, args: Sequence, out_shape: Sequence[int]) -> Tensor:
    """op(*args) computed by the loops above in float64 on the CPU (out_shape: the output's shape)."""
    full = tuple(args) + _DEFAULTS[op][len(args):]
    return _OPS[op](cotangent(out_shape, 0), *(_f64(x) if isinstance(x, Tensor) else x for x in full))[0]
