"""The five mmrec ops, each defined once: the schema in namespace ``mmrec``, the kernel (the wrapper that
mmrec_ops.dispatch picks for the device or forced backend), the fake implementation for torch.compile, and
autograd through a fused backward op (``mmrec::<op>_backward``, run by the backend that ran the forward).

Every entry point validates its arguments (mmrec_ops.validate) before the dispatcher converts them: the public
functions below, ``torch.ops.mmrec.<op>`` and ``torch.ops.mmrec.<op>.default`` (whose ``__call__`` is
:class:`_ValidatingPacket` / :class:`_ValidatingOverload`: torch's argument parser would turn ``reverse=2`` into
``True``), and the fake implementations for traced graphs. An eager call is then: dispatcher -> autograd kernel ->
``kernel`` -> the cached wrapper -> ``mmrec_ops._C`` (or Triton).

Autograd runs as a single-level autograd.Function with ``setup_context``, so ``torch.autograd.grad``,
``torch.func.grad``/``jacrev``/``vjp``, ``torch.vmap`` (torch's per-sample fallback) and ``torch.compile`` all
differentiate the ops. ``scan`` is twice differentiable: with ``create_graph=True`` its backward is SPEC.md's
formula written with scans. The fused backward ops of the other three are not differentiable; differentiating
them raises a RuntimeError that says so.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch._functorch.utils import enable_single_level_autograd_function
from torch.autograd.function import _SingleLevelFunction

from . import dispatch, reference, validate

_lib = torch.library.Library("mmrec", "DEF")


class _ValidatingOverload(torch._ops.OpOverload):
    """``torch.ops.mmrec.<op>.default``: validates like the public function, then calls the op."""

    def __call__(self, /, *args, **kwargs):
        _VALIDATE[self._opname](*args, **kwargs)
        return self._op(*args, **kwargs)


class _ValidatingPacket(torch._ops.OpOverloadPacket):
    """``torch.ops.mmrec.<op>``: validates like the public function, then calls the op."""

    def __call__(self, /, *args, **kwargs):
        _VALIDATE[self.__name__](*args, **kwargs)
        return self._op(*args, **kwargs)


_VALIDATE = {"scan": validate.scan, "recurrence": validate.recurrence, "mdi": validate.mdi,
             "memory_update": validate.memory_update, "memory_read": validate.memory_read}


def _define(schema: str, fake):
    """Defines op mmrec::<name> from its schema: its kernel for every device runs the wrappers dispatch picks
    (<op>_backward: the backend named by its last argument), `fake` serves tracing. Returns its OpOverload."""
    name = schema.split("(", 1)[0]
    op_name, backward = name.removesuffix("_backward"), name.endswith("_backward")
    _lib.define(schema)
    defaults = tuple(arg.default_value for arg in torch._C.parse_schema(f"mmrec::{schema}").arguments)

    def kernel(*args):
        if backward:  # grad, saved..., backend
            return dispatch.wrappers(op_name, args[0].device, args[-1]).backward(*args[:-1])
        args = args + defaults[len(args):]  # the dispatcher leaves out trailing arguments equal to their default
        return dispatch.wrappers(op_name, args[0].device).forward(*args)

    _lib.impl(name, kernel, "CompositeExplicitAutograd")
    torch.library.register_fake(f"mmrec::{name}", fake, lib=_lib)
    packet = getattr(torch.ops.mmrec, name)
    if not backward:
        packet.__class__ = _ValidatingPacket
        packet.default.__class__ = _ValidatingOverload
    return packet.default


def _autograd(op, setup_context, backward) -> None:
    """Registers the autograd kernel of `op`: setup_context(ctx, inputs, output) keeps what backward(ctx, *grads)
    needs; backward returns one gradient (or None) per argument."""
    defaults = tuple(arg.default_value for arg in op._schema.arguments)

    def below_autograd(keyset, *args):
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & torch._C._after_autograd_keyset, *args)

    class Node(_SingleLevelFunction):
        forward = staticmethod(below_autograd)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.backend = dispatch.forced_backend() or ""  # the backward runs the forward's backend
            setup_context(ctx, inputs[1:], output)

        @staticmethod
        def backward(ctx, *grads):
            return (None, *backward(ctx, *grads))

    Node.__name__ = Node.__qualname__ = f"{op._opname}_autograd"

    def autograd_kernel(keyset, *args):
        args = args + defaults[len(args):]
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            with enable_single_level_autograd_function():
                return Node.apply(keyset, *args)
        return below_autograd(keyset, *args)

    _lib.impl(op._opname, autograd_kernel, "Autograd", with_keyset=True)


def _refuse_double_backward(ctx, *grads):
    raise RuntimeError(f"mmrec.{ctx.op} is not differentiable: double backward (a gradient of a gradient) is "
                       "supported for mmrec.scan only")


def _op(schema: str, fake, backward_schema: str, backward_fake, setup_context, backward):
    """Defines op mmrec::<name> and its fused backward op mmrec::<name>_backward (the backward op itself is not
    differentiable) with autograd from setup_context and backward; returns both OpOverloads."""
    op, op_backward = _define(schema, fake), _define(backward_schema, backward_fake)
    _autograd(op, setup_context, backward)
    _autograd(op_backward, lambda ctx, inputs, output: setattr(ctx, "op", op_backward._opname), _refuse_double_backward)
    return op, op_backward


def _given(grad: Tensor, x: Optional[Tensor]) -> Optional[Tensor]:
    """The gradient of an optional input: None where the input was None (zeros)."""
    return None if x is None else grad


# --------------------------------------------------------------------------------------- scan
def _scan_fake(a, b, h0=None, reverse=False):
    validate.scan(a, b, h0, reverse)
    return a.new_empty(a.shape)  # h: [B, T, D]


def _scan_backward_fake(grad, a, h, h0, reverse, backend):
    return a.new_empty(a.shape), a.new_empty(a.shape), a.new_empty(a.shape[0], a.shape[2])  # da, db, dh0


def _scan_setup(ctx, inputs, h):
    a, _, h0, ctx.reverse = inputs
    ctx.save_for_backward(a, h, h0)


def _scan_grad(ctx, grad):
    a, h, h0 = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: a backward that is differentiable again (two scans)
        with dispatch.backend(ctx.backend) if ctx.backend else contextlib.nullcontext():
            da, db, dh0 = reference.scan_backward(grad, a, h, h0, ctx.reverse, scan=_SCAN)
    else:
        da, db, dh0 = _SCAN_BACKWARD(grad, a, h, h0, ctx.reverse, ctx.backend)
    return da, db, _given(dh0, h0), None


_SCAN, _SCAN_BACKWARD = _op(
    "scan(Tensor a, Tensor b, Tensor? h0=None, bool reverse=False) -> Tensor", _scan_fake,
    "scan_backward(Tensor grad, Tensor a, Tensor h, Tensor? h0, bool reverse, str backend) -> (Tensor, Tensor, Tensor)",
    _scan_backward_fake, _scan_setup, _scan_grad)


# --------------------------------------------------------------------------------- recurrence
def _recurrence_fake(z, gamma, w, bias=None, h0=None):
    validate.recurrence(z, gamma, w, bias, h0)
    return z.new_empty(z.shape)  # h: [B, T, D]


def _recurrence_backward_fake(grad, z, gamma, w, bias, h0, h, backend):
    B, _, D = z.shape  # dz, dgamma, dw, dbias, dh0
    return z.new_empty(z.shape), z.new_empty(z.shape), w.new_empty(w.shape), z.new_empty(D), z.new_empty(B, D)


def _recurrence_setup(ctx, inputs, h):
    ctx.save_for_backward(*inputs, h)  # z, gamma, w, bias, h0, h


def _recurrence_grad(ctx, grad):
    z, gamma, w, bias, h0, h = ctx.saved_tensors
    dz, dgamma, dw, dbias, dh0 = _RECURRENCE_BACKWARD(grad, z, gamma, w, bias, h0, h, ctx.backend)
    return dz, dgamma, dw, _given(dbias, bias), _given(dh0, h0)


_RECURRENCE, _RECURRENCE_BACKWARD = _op(
    "recurrence(Tensor z, Tensor gamma, Tensor w, Tensor? bias=None, Tensor? h0=None) -> Tensor", _recurrence_fake,
    "recurrence_backward(Tensor grad, Tensor z, Tensor gamma, Tensor w, Tensor? bias, Tensor? h0, Tensor h, "
    "str backend) -> (Tensor, Tensor, Tensor, Tensor, Tensor)", _recurrence_backward_fake, _recurrence_setup,
    _recurrence_grad)


# ---------------------------------------------------------------------------------------- mdi
def _mdi_fake(v, mod, base, m0=None, eps=1e-6):
    validate.mdi(v, mod, base, m0, eps)
    B, T, D = v.shape
    return v.new_empty(B, T, base.shape[0], D)  # m: [B, T, N, D]


def _mdi_backward_fake(grad, v, mod, base, m0, m, eps, backend):
    B, _, D = v.shape  # dv, dmod, dbase, dm0
    return v.new_empty(v.shape), mod.new_empty(mod.shape), base.new_empty(base.shape), v.new_empty(B, base.shape[0], D)


def _mdi_setup(ctx, inputs, m):
    v, mod, base, m0, ctx.eps = inputs
    ctx.save_for_backward(v, mod, base, m0, m)


def _mdi_grad(ctx, grad):
    v, mod, base, m0, m = ctx.saved_tensors
    dv, dmod, dbase, dm0 = _MDI_BACKWARD(grad, v, mod, base, m0, m, ctx.eps, ctx.backend)
    return dv, dmod, dbase, _given(dm0, m0), None


_MDI, _MDI_BACKWARD = _op(
    "mdi(Tensor v, Tensor mod, Tensor base, Tensor? m0=None, float eps=1e-06) -> Tensor", _mdi_fake,
    "mdi_backward(Tensor grad, Tensor v, Tensor mod, Tensor base, Tensor? m0, Tensor m, float eps, str backend) "
    "-> (Tensor, Tensor, Tensor, Tensor)", _mdi_backward_fake, _mdi_setup, _mdi_grad)


# ------------------------------------------------------------------------------ memory_update
def _memory_update_fake(M0, key, value, strength):
    validate.memory_update(M0, key, value, strength)
    B, S, D = M0.shape
    return M0.new_empty(B, key.shape[1] + 1, S, D)  # Ms: [B, NC + 1, S, D]


def _memory_update_backward_fake(grad, M0, key, value, strength, Ms, backend):
    return tuple(x.new_empty(x.shape) for x in (M0, key, value, strength))  # dM0, dkey, dvalue, dstrength


def _memory_update_setup(ctx, inputs, Ms):
    ctx.save_for_backward(*inputs, Ms)  # M0, key, value, strength, Ms


def _memory_update_grad(ctx, grad):
    return _MEMORY_UPDATE_BACKWARD(grad, *ctx.saved_tensors, ctx.backend)


_MEMORY_UPDATE, _MEMORY_UPDATE_BACKWARD = _op(
    "memory_update(Tensor M0, Tensor key, Tensor value, Tensor strength) -> Tensor", _memory_update_fake,
    "memory_update_backward(Tensor grad, Tensor M0, Tensor key, Tensor value, Tensor strength, Tensor Ms, "
    "str backend) -> (Tensor, Tensor, Tensor, Tensor)", _memory_update_backward_fake, _memory_update_setup,
    _memory_update_grad)


# -------------------------------------------------------------------------------- memory_read
def _memory_read_fake(q, h, v, mod, base, Ms, m0=None, k0=0, chunk_len=1, n_heads=1, eps=1e-6, norm_eps=1e-6):
    validate.memory_read(q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps)
    B, _, D = q.shape
    return q.new_empty(q.shape), q.new_empty(B, base.shape[0], D)  # r: [B, T, D], m_last: [B, N, D]


def _memory_read_backward_fake(grad_r, grad_m, q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps,
                               backend):
    B, _, D = q.shape  # dq, dh, dv, dmod, dbase, dMs, dm0
    return (q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape), mod.new_empty(mod.shape),
            base.new_empty(base.shape), Ms.new_empty(Ms.shape), q.new_empty(B, base.shape[0], D))


def _memory_read_setup(ctx, inputs, output):
    q, h, v, mod, base, Ms, m0, *ctx.config = inputs  # config: k0, chunk_len, n_heads, eps, norm_eps
    ctx.save_for_backward(q, h, v, mod, base, Ms, m0)


def _memory_read_grad(ctx, grad_r, grad_m):
    q, h, v, mod, base, Ms, m0 = ctx.saved_tensors
    grad_r = torch.zeros_like(q) if grad_r is None else grad_r
    grad_m = q.new_zeros(q.shape[0], base.shape[0], q.shape[2]) if grad_m is None else grad_m
    dq, dh, dv, dmod, dbase, dMs, dm0 = _MEMORY_READ_BACKWARD(grad_r, grad_m, q, h, v, mod, base, Ms, m0,
                                                              *ctx.config, ctx.backend)
    return dq, dh, dv, dmod, dbase, dMs, _given(dm0, m0), None, None, None, None, None


_MEMORY_READ, _MEMORY_READ_BACKWARD = _op(
    "memory_read(Tensor q, Tensor h, Tensor v, Tensor mod, Tensor base, Tensor Ms, Tensor? m0=None, SymInt k0=0, "
    "int chunk_len=1, int n_heads=1, float eps=1e-06, float norm_eps=1e-06) -> (Tensor, Tensor)", _memory_read_fake,
    "memory_read_backward(Tensor grad_r, Tensor grad_m, Tensor q, Tensor h, Tensor v, Tensor mod, Tensor base, "
    "Tensor Ms, Tensor? m0, SymInt k0, int chunk_len, int n_heads, float eps, float norm_eps, str backend) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)", _memory_read_backward_fake, _memory_read_setup,
    _memory_read_grad)


# ------------------------------------------------------------------------------ public API
def scan(a: Tensor, b: Tensor, h0: Optional[Tensor] = None, reverse: bool = False) -> Tensor:
    """h_t = a_t * h_{t-1} + b_t (reverse: h_t = a_t * h_{t+1} + b_t). a, b: [B, T, D]; h0: [B, D] -> h: [B, T, D]."""
    return _SCAN(a, b, h0, reverse)


def recurrence(z: Tensor, gamma: Tensor, w: Tensor, bias: Optional[Tensor] = None,
               h0: Optional[Tensor] = None) -> Tensor:
    """h_t = z_t * sigmoid(W h_{t-1} + bias) + gamma_t * h_{t-1}. z, gamma: [B, T, D]; w: [H, d, d] (H d = D);
    bias: [D]; h0: [B, D] -> h: [B, T, D]."""
    return _RECURRENCE(z, gamma, w, bias, h0)


def mdi(v: Tensor, mod: Tensor, base: Tensor, m0: Optional[Tensor] = None, eps: float = 1e-6) -> Tensor:
    """m_t^n = gamma_t^n m_{t-1}^n + (1 - gamma_t^n) v_t, gamma = clamp(sigmoid(base) sigmoid(mod), eps, 1-eps).
    v: [B, T, D]; mod: [B, T, N]; base: [N, D]; m0: [B, N, D] -> m: [B, T, N, D]."""
    return _MDI(v, mod, base, m0, eps)


def memory_update(M0: Tensor, key: Tensor, value: Tensor, strength: Tensor) -> Tensor:
    """Gated content-addressed write per chunk: M0: [B, S, D]; key, value: [B, NC, D]; strength: [B, NC]
    -> Ms: [B, NC + 1, S, D] with Ms[:, 0] = M0."""
    return _MEMORY_UPDATE(M0, key, value, strength)


def memory_read(q: Tensor, h: Tensor, v: Tensor, mod: Tensor, base: Tensor, Ms: Tensor, m0: Optional[Tensor] = None,
                k0: int = 0, chunk_len: int = 1, n_heads: int = 1, eps: float = 1e-6, norm_eps: float = 1e-6
                ) -> Tuple[Tensor, Tensor]:
    """mdi banks + the multi-memory read in one op (SPEC.md, op 5): per read head, token t attends over
    {h_t, m_t^1..N, Ms[:, (k0 + t) // chunk_len, 1..S]}, RMS-normalised. q, h, v: [B, T, D]; mod: [B, T, N];
    base: [N, D]; Ms: [B, ceil((k0 + T) / chunk_len), S, D]; m0: [B, N, D] -> r: [B, T, D], m_last: [B, N, D]."""
    return _MEMORY_READ(q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps)
