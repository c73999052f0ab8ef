"""The `ref` backend: the reference loops behind the op interface. Forward runs
mmrec_ops.reference; backward is autograd's vector-Jacobian product of the same loops
(torch.func.vjp, which works inside an op's kernel where autograd recording is off)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import backends, reference


def _vjp(fn, grad: Tensor, *inputs: Tensor):
    _, pullback = torch.func.vjp(fn, *inputs)
    return pullback(grad)


def scan_forward(a, b, h0, reverse):
    return reference.scan(a, b, h0, reverse)


def scan_backward(grad: Tensor, a: Tensor, h: Tensor, h0: Optional[Tensor], reverse: bool):
    # SPEC.md's backward: delta = scan(a shifted one step later in time, G, reversed direction).
    a_next = torch.zeros_like(a)
    prev = torch.zeros_like(h)
    h_first = torch.zeros_like(a[:, 0]) if h0 is None else h0
    if reverse:
        a_next[:, 1:] = a[:, :-1]
        prev[:, :-1], prev[:, -1] = h[:, 1:], h_first
        delta = reference.scan(a_next, grad, None, reverse=False)
        dh0 = a[:, -1] * delta[:, -1]
    else:
        a_next[:, :-1] = a[:, 1:]
        prev[:, 1:], prev[:, 0] = h[:, :-1], h_first
        delta = reference.scan(a_next, grad, None, reverse=True)
        dh0 = a[:, 0] * delta[:, 0]
    return delta * prev, delta, dh0


def recurrence_forward(z, gamma, w, bias, h0):
    return reference.recurrence(z, gamma, w, bias, h0)


def recurrence_backward(grad, z, gamma, w, bias, h0, h):
    B, _, D = z.shape
    bias_ = torch.zeros(D, dtype=z.dtype, device=z.device) if bias is None else bias
    h0_ = torch.zeros(B, D, dtype=z.dtype, device=z.device) if h0 is None else h0
    return _vjp(reference.recurrence, grad, z, gamma, w, bias_, h0_)


def mdi_forward(v, mod, base, m0, eps):
    return reference.mdi(v, mod, base, m0, eps)


def mdi_backward(grad, v, mod, base, m0, m, eps):
    m0_ = torch.zeros(v.shape[0], base.shape[0], v.shape[2], dtype=v.dtype, device=v.device) if m0 is None else m0
    return _vjp(lambda v_, mod_, base_, m0_: reference.mdi(v_, mod_, base_, m0_, eps), grad, v, mod, base, m0_)


def memory_update_forward(M0, key, value, strength):
    return reference.memory_update(M0, key, value, strength)


def memory_update_backward(grad, M0, key, value, strength, Ms):
    return _vjp(reference.memory_update, grad, M0, key, value, strength)


def memory_read_forward(q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps):
    return reference.memory_read(q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps)


def memory_read_backward(grad_r, grad_m, q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps):
    m0_ = q.new_zeros(q.shape[0], base.shape[0], q.shape[2]) if m0 is None else m0
    _, pullback = torch.func.vjp(
        lambda *xs: reference.memory_read(*xs, k0, chunk_len, n_heads, eps, norm_eps), q, h, v, mod, base, Ms, m0_)
    return pullback((grad_r, grad_m))


def register_all() -> None:
    for op in backends.OPS:
        backends.register("ref", op, globals()[f"{op}_forward"], globals()[f"{op}_backward"])
