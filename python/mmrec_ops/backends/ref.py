"""The `ref` backend: mmrec_ops.reference behind the op interface, on any device. Forward runs the reference
loops; backward is SPEC.md's formula for scan (itself two scans) and autograd's vector-Jacobian product of the
reference for the other ops (torch.func.vjp, which records even below the op's autograd kernel)."""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from .. import reference
from . import Wrappers


def _contiguous(grads):
    return tuple(g.contiguous() for g in grads)  # as the fake implementations promise


def _vjp(fn, grad: Tensor, *inputs: Tensor):
    _, pullback = torch.func.vjp(fn, *inputs)
    return _contiguous(pullback(grad))


def _scan_backward(grad, a, h, h0, reverse):
    return _contiguous(reference.scan_backward(grad, a, h, h0, reverse))


def _zeros_if_none(x, *shape, like: Tensor) -> Tensor:
    return torch.zeros(shape, dtype=like.dtype, device=like.device) if x is None else x


def _recurrence_backward(grad, z, gamma, w, bias, h0, h):
    B, _, D = z.shape
    return _vjp(reference.recurrence, grad, z, gamma, w, _zeros_if_none(bias, D, like=z),
                _zeros_if_none(h0, B, D, like=z))


def _mdi_backward(grad, v, mod, base, m0, m, eps):
    m0 = _zeros_if_none(m0, v.shape[0], base.shape[0], v.shape[2], like=v)
    return _vjp(lambda *xs: reference.mdi(*xs, eps), grad, v, mod, base, m0)


def _memory_update_backward(grad, M0, key, value, strength, Ms):
    return _vjp(reference.memory_update, grad, M0, key, value, strength)


def _memory_read_backward(grad_r, grad_m, q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps):
    m0 = _zeros_if_none(m0, q.shape[0], base.shape[0], q.shape[2], like=q)
    _, pullback = torch.func.vjp(lambda *xs: reference.memory_read(*xs, k0, chunk_len, n_heads, eps, norm_eps),
                                 q, h, v, mod, base, Ms, m0)
    return _contiguous(pullback((grad_r, grad_m)))


def _memory_read(*args):
    return tuple(x.contiguous() for x in reference.memory_read(*args))


TABLE: Dict[str, Wrappers] = {
    "scan": Wrappers(reference.scan, _scan_backward),
    "recurrence": Wrappers(reference.recurrence, _recurrence_backward),
    "mdi": Wrappers(reference.mdi, _mdi_backward),
    "memory_update": Wrappers(reference.memory_update, _memory_update_backward),
    "memory_read": Wrappers(_memory_read, _memory_read_backward),
}
