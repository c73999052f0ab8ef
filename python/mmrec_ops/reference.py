"""Pure-PyTorch reference of the five mmrec ops: the executable form of SPEC.md.

Plain loops over time, differentiable by autograd. Every backend is tested against these
functions run in float64. Low-precision inputs are computed in float32 and cast back, as
the kernels do. Signatures equal the ops'; scan_backward is SPEC.md's backward of scan.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .outputs import acc_dtype as _acc

__all__ = ["scan", "scan_backward", "recurrence", "mdi", "memory_update", "memory_read"]


def scan(a: Tensor, b: Tensor, h0: Optional[Tensor] = None, reverse: bool = False) -> Tensor:
    """h_t = a_t * h_{t-1} + b_t from h_{-1} = h0; reverse: h_t = a_t * h_{t+1} + b_t from h_T = h0.

    a, b: [B, T, D]; h0: [B, D] or None (zeros). Returns h: [B, T, D].
    """
    acc = _acc(a.dtype)
    a_, b_ = a.to(acc), b.to(acc)
    h = a_.new_zeros(a.shape[0], a.shape[2]) if h0 is None else h0.to(acc)
    steps = range(a.shape[1] - 1, -1, -1) if reverse else range(a.shape[1])
    out = [None] * a.shape[1]
    for t in steps:
        h = a_[:, t] * h + b_[:, t]
        out[t] = h
    return torch.stack(out, 1).to(a.dtype)


def scan_backward(grad: Tensor, a: Tensor, h: Tensor, h0: Optional[Tensor], reverse: bool, scan=scan):
    """(dL/da, dL/db, dL/dh0) of h = scan(a, b, h0, reverse) given grad = dL/dh, as SPEC.md writes it: delta is
    the scan of grad in the other direction with a moved one step (delta_t = grad_t + a_{t+1} delta_{t+1});
    da_t = delta_t h_{t-1}, db = delta, dh0 = a_0 delta_0 (t mirrored for reverse). Built from `scan` and
    elementwise ops only, so it is as differentiable as `scan` is.

    grad, a, h: [B, T, D]; h0: [B, D] or None (zeros). Returns da, db: [B, T, D] and dh0: [B, D].
    """
    zero = torch.zeros_like(a[:, :1])
    first = zero if h0 is None else h0[:, None]
    if reverse:  # step t follows step t + 1
        a_next, h_prev = torch.cat([zero, a[:, :-1]], 1), torch.cat([h[:, 1:], first], 1)
        delta = scan(a_next, grad, None, False)
        dh0 = a[:, -1] * delta[:, -1]
    else:
        a_next, h_prev = torch.cat([a[:, 1:], zero], 1), torch.cat([first, h[:, :-1]], 1)
        delta = scan(a_next, grad, None, True)
        dh0 = a[:, 0] * delta[:, 0]
    return delta * h_prev, delta, dh0


def recurrence(z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor] = None,
               h0: Optional[Tensor] = None) -> Tensor:
    """h_t = z_t * sigmoid(W h_{t-1} + bias) + gamma_t * h_{t-1}, W block-diagonal (one d x d block per head).

    z, gamma: [B, T, D]; w: [H, d, d] with H * d = D; bias: [D]; h0: [B, D]. Returns h: [B, T, D].
    """
    acc = _acc(z.dtype)
    B, T, D = z.shape
    H, d, _ = w.shape
    z_, g_, w_ = z.to(acc), gamma.to(acc), w.to(acc)
    # cast once, outside the loop: a cast per step rounds each step's dbias term to the input dtype before autograd
    # sums them (bf16, B=3 T=3000: dbias 6.7 % off)
    bias_ = None if bias is None else bias.to(acc)
    h = z_.new_zeros(B, D) if h0 is None else h0.to(acc)
    out = []
    for t in range(T):
        p = torch.einsum("kij,bkj->bki", w_, h.view(B, H, d)).reshape(B, D)  # [B, D]
        if bias_ is not None:
            p = p + bias_
        h = z_[:, t] * torch.sigmoid(p) + g_[:, t] * h
        out.append(h)
    return torch.stack(out, 1).to(z.dtype)


def mdi(v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor] = None, eps: float = 1e-6) -> Tensor:
    """N memories m_t^n = gamma_t^n * m_{t-1}^n + (1 - gamma_t^n) * v_t with
    gamma_t^n = clamp(sigmoid(base^n) * sigmoid(mod_t^n), eps, 1 - eps).

    v: [B, T, D]; mod: [B, T, N]; base: [N, D]; m0: [B, N, D]. Returns m: [B, T, N, D].
    """
    acc = _acc(v.dtype)
    B, T, D = v.shape
    N = base.shape[0]
    v_ = v.to(acc)
    gamma = torch.clamp(torch.sigmoid(base.to(acc))[None, None] * torch.sigmoid(mod.to(acc))[..., None],
                        eps, 1 - eps)  # [B, T, N, D]
    m = v_.new_zeros(B, N, D) if m0 is None else m0.to(acc)
    out = []
    for t in range(T):
        m = gamma[:, t] * m + (1 - gamma[:, t]) * v_[:, t, None, :]
        out.append(m)
    return torch.stack(out, 1).to(v.dtype)


def memory_update(M0: Tensor, key: Tensor, value: Tensor, strength: Tensor) -> Tensor:
    """Content-addressed gated write of one (key, value) per chunk into S slots.

    w_c = softmax_j(<M_c[j], key_c> / sqrt(D)); M_{c+1}[j] = M_c[j] + strength_c * w_c[j] * (value_c - M_c[j]).
    M0: [B, S, D]; key, value: [B, NC, D]; strength: [B, NC]. Returns Ms: [B, NC + 1, S, D], Ms[:, 0] = M0.
    """
    acc = _acc(M0.dtype)
    D = M0.shape[-1]
    scale = 1.0 / math.sqrt(D)
    M = M0.to(acc)
    k_, v_, s_ = key.to(acc), value.to(acc), strength.to(acc)
    out = [M]
    for c in range(key.shape[1]):
        w = torch.softmax(torch.einsum("bsd,bd->bs", M, k_[:, c]) * scale, dim=-1)  # [B, S]
        M = M + (s_[:, c, None, None] * w[..., None]) * (v_[:, c, None, :] - M)
        out.append(M)
    return torch.stack(out, 1).to(M0.dtype)


def memory_read(q: Tensor, h: Tensor, v: Tensor, mod: Tensor, base: Tensor, Ms: Tensor,
                m0: Optional[Tensor] = None, k0: int = 0, chunk_len: int = 1, n_heads: int = 1,
                eps: float = 1e-6, norm_eps: float = 1e-6) -> Tuple[Tensor, Tensor]:
    """r_t = sum_i softmax_i(<q_t, n(x_i)> / sqrt(dh)) n(x_i) per read head over the items
    {h_t, m_t^1..N, Ms[:, (k0 + t) // chunk_len, 1..S]}, n = RMS normalisation per head slice,
    m = mdi(v, mod, base, m0, eps).

    q, h, v: [B, T, D]; mod: [B, T, N]; base: [N, D]; Ms: [B, L, S, D]; m0: [B, N, D].
    Returns r: [B, T, D] and m_last = m[:, -1]: [B, N, D].
    """
    acc = _acc(q.dtype)
    B, T, D = q.shape
    N, S, Hr = base.shape[0], Ms.shape[2], n_heads
    dh = D // Hr
    m = mdi(v.to(acc), mod.to(acc), base.to(acc), None if m0 is None else m0.to(acc), eps)  # [B, T, N, D]
    chunk = torch.tensor([(k0 + t) // chunk_len for t in range(T)], device=q.device)
    slots = Ms.to(acc)[:, chunk]                                                            # [B, T, S, D]
    items = torch.cat([h.to(acc)[:, :, None], m, slots], 2).view(B, T, 1 + N + S, Hr, dh)
    normed = items * torch.rsqrt(items.pow(2).mean(-1, keepdim=True) + norm_eps)          # [B, T, I, Hr, dh]
    qh = q.to(acc).view(B, T, 1, Hr, dh)
    weights = torch.softmax((qh * normed).sum(-1) / math.sqrt(dh), dim=2)                  # [B, T, I, Hr]
    r = (weights[..., None] * normed).sum(2).reshape(B, T, D)
    return r.to(q.dtype), m[:, -1].to(q.dtype)
