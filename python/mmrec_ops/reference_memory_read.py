"""Pure-PyTorch reference of the fused multi-memory read (SPEC.md, op 5): the banks from the mdi reference
loop, then the read written per item. Float64 in, float64-exact out; low-precision inputs are computed in
float32 (banks included) and cast back, as the kernels do. Differentiable by autograd."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .reference import mdi


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


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
