"""The contract every op meets on every backend that serves it (SPEC.md, common rules): the float64 reference's
forward in every dtype, SPEC.md's gradients (tests/ops/spec_gradients.py) and gradcheck, segment equivalence,
optional states, opcheck, torch.compile (static and dynamic shapes), torch.func transforms, double backward,
determinism, and no crash on malformed calls."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from .cases import CASES, tensor_indices, to64, with_grad
from . import spec_gradients
from .common import assert_close, backend_cases, dtypes_for, grads, rel_err, run, spec_grads, tol_for

PARAMS = [pytest.param(op, *case.values, id=f"{op}-{case.id}") for op in CASES for case in backend_cases(op)]
ALL_OPS = pytest.mark.parametrize("op,backend,device", PARAMS)
# memory_update has no optional argument: it is left out of that test, not skipped.
OPTIONAL_PARAMS = [p for p in PARAMS if CASES[p.values[0]].optional]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _dtypes(backend, device):
    return [torch.float32, torch.float64] + dtypes_for(backend, device)


@pytest.mark.parametrize("op", list(CASES))
def test_reference_matches_the_spec_loops(op):
    """mmrec_ops.reference (the `ref` backend's forward, and every backend's expected output) against the forward
    loops written separately in spec_gradients.py, with and without the optional states."""
    case = CASES[op]
    for T in (1, 9):
        args = case.make(_gen(T), torch.float64, "cpu", T=T)
        no_states = tuple(None if i in case.optional else x for i, x in enumerate(args))
        for call in (args, no_states):
            out = case.ref(*call)
            assert_close(out, spec_gradients.output(op, call, out.shape), 1e-12, f"{op} T={T}")


@ALL_OPS
def test_forward_matches_reference(op, backend, device):
    case = CASES[op]
    for dtype in _dtypes(backend, device):
        for T in (1, 2, 9):
            args = case.make(_gen(T), dtype, device, T=T)
            out = run(backend, case.fn, *args)
            assert out.dtype == dtype and out.device.type == device
            assert_close(out, case.ref(*to64(args)), tol_for(dtype, case.float32_tol), f"{op} {dtype} T={T}")


@ALL_OPS
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_match_spec(op, backend, device, dtype):
    case = CASES[op]
    args = with_grad(case.make(_gen(1), dtype, device))
    idx = tensor_indices(args)
    out = run(backend, case.fn, *args)
    got = grads(out, [args[i] for i in idx])
    want = spec_grads(op, args, out.shape)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for i, g, w in zip(idx, got, want):
        assert g is not None and g.dtype == dtype, f"argument {i} got no gradient of dtype {dtype}"
        assert_close(g, w, tol, f"{op} d(arg {i})")


@ALL_OPS
def test_gradcheck(op, backend, device):
    case = CASES[op]
    args = with_grad(case.make(_gen(2), torch.float64, device, T=3))
    assert run(backend, torch.autograd.gradcheck, case.fn, args, eps=1e-6, atol=1e-6, rtol=1e-4)


@ALL_OPS
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_segments_equal_one_call(op, backend, device, dtype):
    case = CASES[op]
    args = case.make(_gen(3), dtype, device, T=9)
    whole = run(backend, case.fn, *args)
    for k in (1, 4, 8):
        first, second = case.segment(args, k)
        out1 = run(backend, case.fn, *first)
        out2 = run(backend, case.fn, *second(out1))
        tol = 1e-12 if dtype == torch.float64 else 1e-6
        assert_close(case.join(out1, out2), whole, tol, f"{op} split at {k}")


@pytest.mark.parametrize("op,backend,device", OPTIONAL_PARAMS)
def test_optional_states_default_to_zero(op, backend, device):
    case = CASES[op]
    args = list(case.make(_gen(4), torch.float64, device))
    zeros = list(args)
    for i in case.optional:
        args[i] = None
        zeros[i] = torch.zeros_like(zeros[i])
    assert_close(run(backend, case.fn, *args), run(backend, case.fn, *zeros), 1e-12, f"{op} None states")
    targs = with_grad(tuple(args))
    idx = tensor_indices(targs)
    got = grads(run(backend, case.fn, *targs), [targs[i] for i in idx])
    assert all(g is not None and torch.isfinite(g).all() for g in got)


@ALL_OPS
def test_deterministic(op, backend, device):
    case = CASES[op]
    args = with_grad(case.make(_gen(5), torch.float32, device))
    idx = tensor_indices(args)
    runs = []
    for _ in range(2):
        out = run(backend, case.fn, *args)
        runs.append((out, *grads(out, [args[i] for i in idx])))
    for x, y in zip(*runs):
        assert torch.equal(x, y), f"{op}: two runs on the same input differ"


@ALL_OPS
def test_opcheck(op, backend, device):
    case = CASES[op]
    args = with_grad(case.make(_gen(6), torch.float32, device, T=3))
    run(backend, torch.library.opcheck, getattr(torch.ops.mmrec, op).default, args)


@ALL_OPS
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_compile_fullgraph_equals_eager(op, backend, device, dynamic):
    """One graph (fullgraph) for forward and backward; with dynamic shapes the same graph serves two lengths."""
    case = CASES[op]
    torch._dynamo.reset()
    compiled_fn = torch.compile(case.fn, fullgraph=True, dynamic=dynamic)
    for T in ((5, 7) if dynamic else (5,)):
        args = with_grad(case.make(_gen(7), torch.float32, device, T=T))
        idx = tensor_indices(args)
        eager = run(backend, case.fn, *args)
        compiled = run(backend, compiled_fn, *args)
        assert_close(compiled, eager, 1e-6, f"{op} compiled forward T={T}")
        for ge, gc in zip(grads(eager, [args[i] for i in idx]), grads(compiled, [args[i] for i in idx])):
            assert_close(gc, ge, 1e-6, f"{op} compiled backward T={T}")


@ALL_OPS
def test_torch_func_grad_vjp_and_vmap(op, backend, device):
    """torch.func.grad and vjp give SPEC.md's gradients; vmap over a batch of calls equals the calls one by one."""
    case = CASES[op]
    args = to64(case.make(_gen(9), torch.float64, device, T=3))
    idx = tensor_indices(args)
    out = run(backend, case.fn, *args)
    G = torch.randn(out.shape, generator=_gen(9), dtype=torch.float64).to(device)

    def loss(*tensors):
        full = list(args)
        for i, x in zip(idx, tensors):
            full[i] = x
        return (case.fn(*full) * G).sum()

    got = run(backend, torch.func.grad(loss, argnums=tuple(range(len(idx)))), *(args[i] for i in idx))
    _, pullback = run(backend, torch.func.vjp, lambda *t: loss(*t), *(args[i] for i in idx))
    want = spec_grads(op, args, out.shape, seed=9)
    for i, g, v, w in zip(idx, got, run(backend, pullback, torch.ones((), dtype=torch.float64, device=device)), want):
        assert_close(g, w, 1e-10, f"{op} torch.func.grad d(arg {i})")
        assert_close(v, w, 1e-10, f"{op} torch.func.vjp d(arg {i})")
    first = idx[0]
    other = to64(case.make(_gen(10), torch.float64, device, T=3))
    stacked = torch.stack([args[first], other[first]])
    batched = run(backend, torch.vmap(lambda x: case.fn(*args[:first], x, *args[first + 1:])), stacked)
    for k, x in enumerate((args[first], other[first])):
        assert_close(batched[k], run(backend, case.fn, *args[:first], x, *args[first + 1:]), 1e-12, f"{op} vmap {k}")


@ALL_OPS
def test_double_backward(op, backend, device):
    """scan is twice differentiable (gradgradcheck); the other ops refuse a gradient of their gradient by name."""
    case = CASES[op]
    args = with_grad(case.make(_gen(11), torch.float64, device, T=3))
    if op == "scan":
        assert run(backend, torch.autograd.gradgradcheck, case.fn, args, eps=1e-6, atol=1e-6, rtol=1e-4)
        return
    tensors = [args[i] for i in tensor_indices(args)]
    first = torch.autograd.grad(run(backend, case.fn, *args).square().sum(), tensors, create_graph=True)
    with pytest.raises(RuntimeError, match=rf"mmrec.{op}_backward is not differentiable.*mmrec.scan only"):
        torch.autograd.grad(sum(g.square().sum() for g in first), tensors)


_BAD_DTYPES = [torch.float32, torch.float64, torch.int64, torch.bool, torch.complex64]


@ALL_OPS
@settings(max_examples=25)
@given(data=st.data())
def test_malformed_calls_raise_clear_errors(op, backend, device, data):
    """Random shape/dtype corruptions of a valid call: either the call is still valid and runs, or it
    raises TypeError/ValueError; the process never crashes."""
    case = CASES[op]
    args = list(case.make(_gen(8), torch.float32, device, T=4))
    i = data.draw(st.sampled_from(tensor_indices(tuple(args))), label="argument")
    kind = data.draw(st.sampled_from(["shape", "dtype", "rank", "empty"]), label="corruption")
    x = args[i]
    if kind == "shape":
        shape = [data.draw(st.integers(1, 6)) for _ in x.shape]
        args[i] = torch.rand(shape, device=device)
    elif kind == "dtype":
        args[i] = x.to(data.draw(st.sampled_from(_BAD_DTYPES)))
    elif kind == "rank":
        args[i] = x.reshape(-1) if x.dim() > 1 else x.reshape(1, 1, -1)
    else:
        args[i] = x.narrow(min(1, x.dim() - 1), 0, 0)
    try:
        out = run(backend, case.fn, *args)
    except (TypeError, ValueError) as exc:
        assert str(exc), "error without a message"
        return
    assert rel_err(out, case.ref(*to64(tuple(args)))) < 1e-4
