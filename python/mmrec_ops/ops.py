"""The five mmrec ops, each defined once: torch.library custom ops in namespace ``mmrec``
with fake (meta) implementations for torch.compile and autograd formulas that call a fused
backward op. Every call validates its arguments, then runs the backend that
``backends.resolve`` picks for the device (see backends.py).

The public functions at the end validate before the dispatcher sees the call, so that a
wrong argument type is a TypeError naming the argument (the dispatcher itself raises
RuntimeError and silently turns ints into bools)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _ref, backends, validate

_ref.register_all()


def _run(op: str, which: str, device: torch.device, *args, backend: str = ""):
    """Runs `backend` (or the one chosen for the device when empty); outputs are contiguous, as the fake
    implementations promise."""
    _, impl = backends.resolve(op, device.type, backend or None)
    out = getattr(impl, which)(*args)
    if isinstance(out, tuple):
        return tuple(x.contiguous() for x in out)
    return out.contiguous()


def _forward_backend() -> str:
    """The backend forced while the forward ran ("" = choose by device), so that the backward runs the
    same one even outside the `with backend(...)` block or on autograd's CUDA worker thread."""
    return backends.forced_backend() or ""


# --------------------------------------------------------------------------------------- scan
@torch.library.custom_op("mmrec::scan", mutates_args=())
def _scan_op(a: Tensor, b: Tensor, h0: Optional[Tensor] = None, reverse: bool = False) -> Tensor:
    validate.scan(a, b, h0, reverse)
    return _run("scan", "forward", a.device, a, b, h0, reverse)


@_scan_op.register_fake
def _(a, b, h0=None, reverse=False):
    validate.scan(a, b, h0, reverse)
    return a.new_empty(a.shape)


@torch.library.custom_op("mmrec::scan_backward", mutates_args=())
def scan_backward(grad: Tensor, a: Tensor, h: Tensor, h0: Optional[Tensor], reverse: bool, backend: str
                  ) -> Tuple[Tensor, Tensor, Tensor]:
    return _run("scan", "backward", a.device, grad, a, h, h0, reverse, backend=backend)


@scan_backward.register_fake
def _(grad, a, h, h0, reverse, backend):
    return a.new_empty(a.shape), a.new_empty(a.shape), a.new_empty(a.shape[0], a.shape[2])


def _scan_setup(ctx, inputs, output):
    a, _, h0, reverse = inputs
    ctx.save_for_backward(a, output, h0)
    ctx.reverse = reverse
    ctx.backend = _forward_backend()


def _scan_grad(ctx, grad):
    a, h, h0 = ctx.saved_tensors
    da, db, dh0 = scan_backward(grad, a, h, h0, ctx.reverse, ctx.backend)
    return da, db, (dh0 if h0 is not None else None), None


_scan_op.register_autograd(_scan_grad, setup_context=_scan_setup)


# --------------------------------------------------------------------------------- recurrence
@torch.library.custom_op("mmrec::recurrence", mutates_args=())
def _recurrence_op(z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor] = None,
               h0: Optional[Tensor] = None) -> Tensor:
    validate.recurrence(z, gamma, w, bias, h0)
    return _run("recurrence", "forward", z.device, z, gamma, w, bias, h0)


@_recurrence_op.register_fake
def _(z, gamma, w, bias=None, h0=None):
    validate.recurrence(z, gamma, w, bias, h0)
    return z.new_empty(z.shape)


@torch.library.custom_op("mmrec::recurrence_backward", mutates_args=())
def recurrence_backward(grad: Tensor, z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor],
                        h0: Optional[Tensor], h: Tensor, backend: str
                        ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _run("recurrence", "backward", z.device, grad, z, gamma, w, bias, h0, h, backend=backend)


@recurrence_backward.register_fake
def _(grad, z, gamma, w, bias, h0, h, backend):
    B, _, D = z.shape
    return (z.new_empty(z.shape), z.new_empty(z.shape), w.new_empty(w.shape), z.new_empty(D),
            z.new_empty(B, D))


def _recurrence_setup(ctx, inputs, output):
    z, gamma, w, bias, h0 = inputs
    ctx.save_for_backward(z, gamma, w, bias, h0, output)
    ctx.backend = _forward_backend()


def _recurrence_grad(ctx, grad):
    z, gamma, w, bias, h0, h = ctx.saved_tensors
    dz, dgamma, dw, dbias, dh0 = recurrence_backward(grad, z, gamma, w, bias, h0, h, ctx.backend)
    return dz, dgamma, dw, (dbias if bias is not None else None), (dh0 if h0 is not None else None)


_recurrence_op.register_autograd(_recurrence_grad, setup_context=_recurrence_setup)


# ---------------------------------------------------------------------------------------- mdi
@torch.library.custom_op("mmrec::mdi", mutates_args=())
def _mdi_op(v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor] = None, eps: float = 1e-6) -> Tensor:
    validate.mdi(v, mod, base, m0, eps)
    return _run("mdi", "forward", v.device, v, mod, base, m0, eps)


@_mdi_op.register_fake
def _(v, mod, base, m0=None, eps=1e-6):
    validate.mdi(v, mod, base, m0, eps)
    B, T, D = v.shape
    return v.new_empty(B, T, base.shape[0], D)


@torch.library.custom_op("mmrec::mdi_backward", mutates_args=())
def mdi_backward(grad: Tensor, v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor], m: Tensor,
                 eps: float, backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return _run("mdi", "backward", v.device, grad, v, mod, base, m0, m, eps, backend=backend)


@mdi_backward.register_fake
def _(grad, v, mod, base, m0, m, eps, backend):
    B, _, D = v.shape
    return v.new_empty(v.shape), mod.new_empty(mod.shape), base.new_empty(base.shape), \
        v.new_empty(B, base.shape[0], D)


def _mdi_setup(ctx, inputs, output):
    v, mod, base, m0, eps = inputs
    ctx.save_for_backward(v, mod, base, m0, output)
    ctx.eps = eps
    ctx.backend = _forward_backend()


def _mdi_grad(ctx, grad):
    v, mod, base, m0, m = ctx.saved_tensors
    dv, dmod, dbase, dm0 = mdi_backward(grad, v, mod, base, m0, m, ctx.eps, ctx.backend)
    return dv, dmod, dbase, (dm0 if m0 is not None else None), None


_mdi_op.register_autograd(_mdi_grad, setup_context=_mdi_setup)


# ------------------------------------------------------------------------------ memory_update
@torch.library.custom_op("mmrec::memory_update", mutates_args=())
def _memory_update_op(M0: Tensor, key: Tensor, value: Tensor, strength: Tensor) -> Tensor:
    validate.memory_update(M0, key, value, strength)
    return _run("memory_update", "forward", M0.device, M0, key, value, strength)


@_memory_update_op.register_fake
def _(M0, key, value, strength):
    validate.memory_update(M0, key, value, strength)
    B, S, D = M0.shape
    return M0.new_empty(B, key.shape[1] + 1, S, D)


@torch.library.custom_op("mmrec::memory_update_backward", mutates_args=())
def memory_update_backward(grad: Tensor, M0: Tensor, key: Tensor, value: Tensor, strength: Tensor, Ms: Tensor,
                           backend: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return _run("memory_update", "backward", M0.device, grad, M0, key, value, strength, Ms, backend=backend)


@memory_update_backward.register_fake
def _(grad, M0, key, value, strength, Ms, backend):
    return M0.new_empty(M0.shape), key.new_empty(key.shape), value.new_empty(value.shape), \
        strength.new_empty(strength.shape)


def _memory_update_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs, output)
    ctx.backend = _forward_backend()


def _memory_update_grad(ctx, grad):
    return memory_update_backward(grad, *ctx.saved_tensors, ctx.backend)


_memory_update_op.register_autograd(_memory_update_grad, setup_context=_memory_update_setup)


# -------------------------------------------------------------------------------- memory_read
@torch.library.custom_op("mmrec::memory_read", mutates_args=())
def _memory_read_op(q: Tensor, h: Tensor, v: Tensor, mod: Tensor, base: Tensor, Ms: Tensor,
                    m0: Optional[Tensor] = None, k0: int = 0, chunk_len: int = 1, n_heads: int = 1,
                    eps: float = 1e-6, norm_eps: float = 1e-6) -> Tuple[Tensor, Tensor]:
    validate.memory_read(q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps)
    return _run("memory_read", "forward", q.device, q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps,
                norm_eps)


@_memory_read_op.register_fake
def _(q, h, v, mod, base, Ms, m0=None, k0=0, chunk_len=1, n_heads=1, eps=1e-6, norm_eps=1e-6):
    validate.memory_read(q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps)
    B, _, D = q.shape
    return q.new_empty(q.shape), q.new_empty(B, base.shape[0], D)


@torch.library.custom_op("mmrec::memory_read_backward", mutates_args=())
def memory_read_backward(grad_r: Tensor, grad_m: Tensor, q: Tensor, h: Tensor, v: Tensor, mod: Tensor, base: Tensor,
                         Ms: Tensor, m0: Optional[Tensor], k0: int, chunk_len: int, n_heads: int, eps: float,
                         norm_eps: float, backend: str
                         ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _run("memory_read", "backward", q.device, grad_r, grad_m, q, h, v, mod, base, Ms, m0, k0, chunk_len,
                n_heads, eps, norm_eps, backend=backend)


@memory_read_backward.register_fake
def _(grad_r, grad_m, q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps, backend):
    B, _, D = q.shape
    return (q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape), mod.new_empty(mod.shape),
            base.new_empty(base.shape), Ms.new_empty(Ms.shape), q.new_empty(B, base.shape[0], D))


def _memory_read_setup(ctx, inputs, output):
    q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps = inputs
    ctx.save_for_backward(q, h, v, mod, base, Ms, m0)
    ctx.config = (k0, chunk_len, n_heads, eps, norm_eps)
    ctx.backend = _forward_backend()


def _memory_read_grad(ctx, grad_r, grad_m):
    q, h, v, mod, base, Ms, m0 = ctx.saved_tensors
    grad_r = torch.zeros_like(q) if grad_r is None else grad_r
    grad_m = q.new_zeros(q.shape[0], base.shape[0], q.shape[2]) if grad_m is None else grad_m
    dq, dh, dv, dmod, dbase, dMs, dm0 = memory_read_backward(grad_r, grad_m, q, h, v, mod, base, Ms, m0,
                                                             *ctx.config, ctx.backend)
    return dq, dh, dv, dmod, dbase, dMs, (dm0 if m0 is not None else None), None, None, None, None, None


_memory_read_op.register_autograd(_memory_read_grad, setup_context=_memory_read_setup)


# ------------------------------------------------------------------------------ public API
def scan(a: Tensor, b: Tensor, h0: Optional[Tensor] = None, reverse: bool = False) -> Tensor:
    """h_t = a_t * h_{t-1} + b_t (reverse: h_t = a_t * h_{t+1} + b_t). a, b: [B, T, D]; h0: [B, D]."""
    validate.scan(a, b, h0, reverse)
    return _scan_op(a, b, h0, reverse)


def recurrence(z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor] = None,
               h0: Optional[Tensor] = None) -> Tensor:
    """h_t = z_t * sigmoid(W h_{t-1} + bias) + gamma_t * h_{t-1}. z, gamma: [B, T, D]; w: [H, d, d]."""
    validate.recurrence(z, gamma, w, bias, h0)
    return _recurrence_op(z, gamma, w, bias, h0)


def mdi(v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor] = None, eps: float = 1e-6) -> Tensor:
    """m_t^n = gamma_t^n m_{t-1}^n + (1 - gamma_t^n) v_t, gamma = clamp(sigmoid(base) sigmoid(mod), eps, 1-eps).
    v: [B, T, D]; mod: [B, T, N]; base: [N, D]; m0: [B, N, D] -> m: [B, T, N, D]."""
    validate.mdi(v, mod, base, m0, eps)
    return _mdi_op(v, mod, base, m0, float(eps))


def memory_update(M0: Tensor, key: Tensor, value: Tensor, strength: Tensor) -> Tensor:
    """Gated content-addressed write per chunk: M0: [B, S, D]; key, value: [B, NC, D]; strength: [B, NC]
    -> Ms: [B, NC + 1, S, D] with Ms[:, 0] = M0."""
    validate.memory_update(M0, key, value, strength)
    return _memory_update_op(M0, key, value, strength)



def memory_read(q: Tensor, h: Tensor, v: Tensor, mod: Tensor, base: Tensor, Ms: Tensor, m0: Optional[Tensor] = None,
                k0: int = 0, chunk_len: int = 1, n_heads: int = 1, eps: float = 1e-6, norm_eps: float = 1e-6
                ) -> Tuple[Tensor, Tensor]:
    """mdi banks + the multi-memory read in one op (SPEC.md, op 5): per read head, token t attends over
    {h_t, m_t^1..N, Ms[:, (k0 + t) // chunk_len, 1..S]}, RMS-normalised. q, h, v: [B, T, D]; mod: [B, T, N];
    base: [N, D]; Ms: [B, ceil((k0 + T) / chunk_len), S, D]; m0: [B, N, D] -> r: [B, T, D], m_last: [B, N, D]."""
    validate.memory_read(q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps)
    return _memory_read_op(q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, float(eps), float(norm_eps))
