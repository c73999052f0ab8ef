"""recurrence-specific checks on every backend that serves it: property tests against a float64 run of
mmrec_ops.reference (odd sizes, dense and multi-head W, layouts, optional bias/h0, gamma at the extremes),
gradients at d = 128 and d = 256, long sequences, determinism at a multi-thread size, and named errors."""
from __future__ import annotations

import multiprocessing

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmrec_ops
from mmrec_ops import dispatch, reference

from .common import assert_close, backend_cases, dtypes_for, grads, layout, leaf, run, spec_grads, tol_for
from .spec_gradients import cotangent

# The triton backend's documented head-size limits (mmrec_ops/backends/triton.py): 128 for 32- and 16-bit inputs;
# float64 128 under the interpreter, 64 on a GPU (shared memory).
TRITON_MAX_HEAD_DIM = 128
TRITON_MAX_HEAD_DIM_FLOAT64 = {"cpu": 128, "cuda": 64}

BACKENDS = pytest.mark.parametrize("backend,device", backend_cases("recurrence"))
FLOAT32_TOL = 1e-5


def _inputs(gen, B, T, H, d, dtype, device, gamma_range=(0.5, 1.0), bias=True, h0=True):
    D = H * d

    def rand(shape, lo, hi):
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo).to(device=device, dtype=dtype)

    scale = 1.5 / d ** 0.5
    return [rand((B, T, D), -1, 1), rand((B, T, D), *gamma_range), rand((H, d, d), -scale, scale),
            rand((D,), -0.5, 0.5) if bias else None, rand((B, D), -1, 1) if h0 else None]


def _check(backend, args, dtype, grad_tol, what):
    """Forward and all gradients of the backend vs the float64 reference's forward and SPEC.md's gradients."""
    args = [None if x is None else leaf(x) for x in args]
    out = run(backend, mmrec_ops.recurrence, *args)
    ref = reference.recurrence(*(None if x is None else x.detach().double() for x in args))
    assert out.dtype == dtype and out.shape == ref.shape
    assert_close(out, ref, tol_for(dtype, FLOAT32_TOL), f"{what} forward")
    got = grads(out, [x for x in args if x is not None])
    want = spec_grads("recurrence", args, out.shape)
    names = [n for n, x in zip(("z", "gamma", "w", "bias", "h0"), args) if x is not None]
    # dw and dbias are sums over B*T terms that can cancel: at B=3 T=2 d=1 a float32 dw of 1e-4 came from terms of
    # ~1e-1 (5e-4 relative error on the H100 triton backend, with fp32-exact products). Below float64 they are
    # measured against the largest gradient of the call, the scale of the terms they sum.
    largest = max(w.abs().max().item() for w in want)
    for name, g, w in zip(names, got, want):
        assert g is not None and g.dtype == dtype, f"{what}: no {dtype} gradient for {name}"
        if name in ("w", "bias") and dtype != torch.float64:
            err = (g.double().cpu() - w.cpu()).abs().max().item()  # NaN fails the <= below
            assert err <= grad_tol * largest, (f"{what} d{name}: max|out-ref| = {err:.3e} > {grad_tol:.0e} x "
                                               f"largest gradient {largest:.3e}")
        else:
            assert_close(g, w, grad_tol, f"{what} d{name}")


GAMMA = {"near0": (0.0, 1e-3), "mid": (0.3, 0.9), "near1": (1 - 1e-3, 1.0)}


@BACKENDS
@settings(max_examples=20)
@given(data=st.data())
def test_matches_reference_property(backend, device, data):
    B = data.draw(st.sampled_from([1, 2, 3, 5]), label="B")
    T = data.draw(st.sampled_from([1, 2, 5, 9]), label="T")
    H = data.draw(st.sampled_from([1, 2, 3]), label="H")
    d = data.draw(st.sampled_from([1, 3, 16, 64]), label="d")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64] + dtypes_for(backend, device)), label="dtype")
    gamma_range = GAMMA[data.draw(st.sampled_from(sorted(GAMMA)), label="gamma")]
    bias = data.draw(st.booleans(), label="bias")
    h0 = data.draw(st.booleans(), label="h0")
    kinds = [data.draw(st.sampled_from(["contig", "noncontig", "expanded"]), label=f"layout {n}")
             for n in ("z", "gamma", "w")]
    args = _inputs(torch.Generator().manual_seed(B * 1000 + T * 100 + d), B, T, H, d, dtype, device, gamma_range,
                   bias, h0)
    for i, kind in enumerate(kinds):
        args[i] = layout(args[i], kind)
    grad_tol = {torch.float64: 1e-10, torch.float32: 1e-4}.get(dtype, 5e-2)
    _check(backend, args, dtype, grad_tol, f"B={B} T={T} H={H} d={d} {dtype} layouts={kinds}")


@BACKENDS
@pytest.mark.parametrize("H,d,B,T", [(2, 128, 3, 30), (1, 256, 2, 6), (4, 16, 1, 130)],
                         ids=["heads-d128-long", "dense-d256", "B1-T130"])
def test_gradients_float64(backend, device, H, d, B, T):
    """Sequences longer than the kernel's dW fold (64 rows) and several batch rows per task."""
    args = _inputs(torch.Generator().manual_seed(d + T), B, T, H, d, torch.float64, device)
    if backend == "triton" and d > TRITON_MAX_HEAD_DIM_FLOAT64[device]:  # a documented limit: it must refuse clearly
        with pytest.raises(ValueError, match="head dimensions"):
            run(backend, mmrec_ops.recurrence, *args)
        return
    _check(backend, args, torch.float64, 1e-10, f"H={H} d={d} B={B} T={T}")


# The CUDA backend's latency kernels (kernels/cuda/recurrence_latency.cuh) take d in {32, 64, 128}: float32 on FMA
# kernels with 4 rows per block while ceil(B / 4) * H blocks fit on the multiprocessors, else 8 (H = 70 at B = 9
# gives 210 blocks of 4 rows, more than any current GPU has SMs: 8 rows, the second tile with one live row);
# bf16/f16 on tensor-core kernels with 8 rows per block (B = 9: a second tile with one live row). Other d (16, 256)
# and float64 take the general kernels. Each case runs the forward and every gradient.
LATENCY_SHAPES = {  # id: (B, T, H, d, gamma range, bias, h0)
    "d32-B5-R4": (5, 17, 3, 32, "mid", True, True),
    "d64-B1-T1": (1, 1, 2, 64, "mid", True, True),
    "d64-B1-T1-none": (1, 1, 2, 64, "mid", False, False),
    "d64-B6-R4-nobias": (6, 33, 2, 64, "near1", False, True),
    "d64-B3-T3000": (3, 3000, 2, 64, "mid", True, True),
    "d128-B7-R4-noh0": (7, 40, 2, 128, "mid", True, False),
    "d32-B9-R8": (9, 5, 70, 32, "mid", True, True),
    "d64-B9-R8": (9, 5, 70, 64, "near0", False, True),
    "d128-B9-R8": (9, 3, 70, 128, "mid", True, False),
    "d16-general": (5, 9, 2, 16, "mid", True, True),
    "d256-general": (3, 6, 1, 256, "mid", True, True),
}
CUDA_CASES = [c for c in backend_cases("recurrence") if c.values[1] == "cuda"]


@pytest.mark.parametrize("backend,device", CUDA_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["f32", "bf16", "f16"])
@pytest.mark.parametrize("shape", list(LATENCY_SHAPES))
def test_cuda_kernel_variants(backend, device, dtype, shape):
    B, T, H, d, gamma, bias, h0 = LATENCY_SHAPES[shape]
    if T > 1000 and dtype == torch.float16:
        pytest.skip("the long sequence runs in float32 and bfloat16; float16 shares their kernel")
    args = _inputs(torch.Generator().manual_seed(B * 7 + T + d), B, T, H, d, dtype, device, GAMMA[gamma], bias, h0)
    if backend == "triton" and d > TRITON_MAX_HEAD_DIM:                  # a documented limit: it must refuse clearly
        with pytest.raises(ValueError, match="head dimensions"):
            run(backend, mmrec_ops.recurrence, *args)
        return
    grad_tol = 1e-4 if dtype == torch.float32 else 5e-2
    _check(backend, args, dtype, grad_tol, f"{shape} B={B} T={T} H={H} d={d} {dtype}")


CPU_BF16_CASES = [c for c in backend_cases("recurrence")
                  if c.values[1] == "cpu" and torch.bfloat16 in dtypes_for(*c.values)]


@pytest.mark.parametrize("backend,device", CPU_BF16_CASES)
def test_bf16_long_sequence_cpu(backend, device):
    """The CUDA case d64-B3-T3000 in bf16 on the CPU backends: dbias sums 9,000 terms, which must add in float32
    (rounding each step's term to bf16 before the sum puts dbias 6.7 % off here)."""
    B, T, H, d, gamma, bias, h0 = LATENCY_SHAPES["d64-B3-T3000"]
    args = _inputs(torch.Generator().manual_seed(B * 7 + T + d), B, T, H, d, torch.bfloat16, device, GAMMA[gamma],
                   bias, h0)
    _check(backend, args, torch.bfloat16, 5e-2, f"B={B} T={T} H={H} d={d} bf16")


@BACKENDS
def test_optional_arguments_none(backend, device):
    gen = torch.Generator().manual_seed(11)
    for bias in (False, True):
        for h0 in (False, True):
            args = _inputs(gen, 2, 4, 2, 8, torch.float64, device, bias=bias, h0=h0)
            _check(backend, args, torch.float64, 1e-10, f"bias={bias} h0={h0}")


@BACKENDS
def test_backward_outputs_for_absent_bias_and_h0(backend, device):
    """The backward op always returns dbias and dh0 (gradients w.r.t. a zero bias / zero h0)."""
    z, gamma, w, _, _ = _inputs(torch.Generator().manual_seed(12), 2, 5, 2, 4, torch.float64, device)
    h = run(backend, mmrec_ops.recurrence, z, gamma, w)
    grad = cotangent(h.shape, 13).to(device)
    with dispatch.backend(backend):
        dz, dgamma, dw, dbias, dh0 = torch.ops.mmrec.recurrence_backward(grad, z, gamma, w, None, None, h, backend)
    zero_b, zero_h = torch.zeros_like(z[0, 0]), torch.zeros_like(z[:, 0])
    want = spec_grads("recurrence", (z, gamma, w, zero_b, zero_h), h.shape, 13)
    for name, g, wnt in zip(("dz", "dgamma", "dw", "dbias", "dh0"), (dz, dgamma, dw, dbias, dh0), want):
        assert_close(g, wnt, 1e-10, name)


@BACKENDS
def test_deterministic_at_multithread_size(backend, device):
    """Several tasks per thread and several dW folds: two runs agree bit for bit."""
    args = [leaf(x) for x in _inputs(torch.Generator().manual_seed(14), 5, 70, 2, 64, torch.float32, device)]
    runs = []
    for _ in range(2):
        out = run(backend, mmrec_ops.recurrence, *args)
        runs.append((out, *grads(out, args)))
    for x, y in zip(*runs):
        assert torch.equal(x, y)


# The C++ CPU kernel's paths in float32: d = 128 (8-vector panels), d > 64 and not a multiple of 8 (zero-padded
# panels), a dense W (H = 1), batch blocks of 4 rows plus a remainder (B = 6), T = 1, T beyond one 64-row backward
# block, with and without bias and h0.
CPU_FLOAT32_SHAPES = {"B1-T70-H4-d128": (1, 70, 4, 128, True, True), "B1-T1-H2-d128": (1, 1, 2, 128, False, True),
                      "B6-T9-dense-d100": (6, 9, 1, 100, True, False), "B3-T5-H3-d13": (3, 5, 3, 13, False, False),
                      "B2-T67-H2-d72": (2, 67, 2, 72, False, True)}
CPU_ONLY = pytest.mark.parametrize("backend,device", [c for c in backend_cases("recurrence") if c.values[0] == "cpu"])


@CPU_ONLY
@pytest.mark.parametrize("shape", list(CPU_FLOAT32_SHAPES))
def test_cpu_float32_kernel_paths(backend, device, shape):
    B, T, H, d, bias, h0 = CPU_FLOAT32_SHAPES[shape]
    args = _inputs(torch.Generator().manual_seed(B + T + d), B, T, H, d, torch.float32, device, bias=bias, h0=h0)
    _check(backend, args, torch.float32, 1e-4, shape)


@CPU_ONLY
def test_cpu_same_bits_for_any_thread_count(backend, device):
    """The tasks (head, batch block) go to whichever thread claims them first; the results must not depend on it."""
    args = [leaf(x) for x in _inputs(torch.Generator().manual_seed(16), 6, 70, 4, 40, torch.float32, device)]
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3, 2):
            torch.set_num_threads(threads)
            out = run(backend, mmrec_ops.recurrence, *args)
            runs.append((out, *grads(out, args)))
    finally:
        torch.set_num_threads(before)
    for other in runs[1:]:
        for x, y in zip(runs[0], other):
            assert torch.equal(x, y)


def _forked_child(conn, args, backend):
    out = run(backend, mmrec_ops.recurrence, *args)
    conn.send(out.tolist())  # plain floats: a tensor would be shared through memory the exiting child owns
    conn.close()


@CPU_ONLY
def test_cpu_runs_in_a_forked_child(backend, device):
    """A child forked after the kernel's worker threads started (it has none of them) computes the same h."""
    args = _inputs(torch.Generator().manual_seed(17), 1, 20, 4, 32, torch.float32, device)
    want = run(backend, mmrec_ops.recurrence, *args)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_forked_child, args=(child, args, backend))
    proc.start()
    got = parent.recv() if parent.poll(120) else None
    proc.join(30)
    assert proc.exitcode == 0 and got is not None
    assert torch.equal(torch.tensor(got, dtype=want.dtype), want)


def _valid(device="cpu"):
    return _inputs(torch.Generator().manual_seed(15), 2, 3, 2, 4, torch.float32, device)


BAD_CALLS = {
    "z rank": (lambda z, g, w, b, h: (z[0], g, w, b, h), ValueError, "z"),
    "gamma rank": (lambda z, g, w, b, h: (z, g[0], w, b, h), ValueError, "gamma"),
    "w rank": (lambda z, g, w, b, h: (z, g, w[0], b, h), ValueError, "w"),
    "H*d != D": (lambda z, g, w, b, h: (z, g, w[:1], b, h), ValueError, "w"),
    "w not square": (lambda z, g, w, b, h: (z, g, w[:, :, :3], b, h), ValueError, "w"),
    "gamma shape": (lambda z, g, w, b, h: (z, g[:, :2], w, b, h), ValueError, "gamma"),
    "bias shape": (lambda z, g, w, b, h: (z, g, w, b[:3], h), ValueError, "bias"),
    "h0 shape": (lambda z, g, w, b, h: (z, g, w, b, h[:1]), ValueError, "h0"),
    "gamma dtype": (lambda z, g, w, b, h: (z, g.double(), w, b, h), TypeError, "gamma"),
    "w dtype": (lambda z, g, w, b, h: (z, g, w.double(), b, h), TypeError, "w"),
    "h0 dtype": (lambda z, g, w, b, h: (z, g, w, b, h.to(torch.bfloat16)), TypeError, "h0"),
    "integer z": (lambda z, g, w, b, h: (z.long(), g, w, b, h), TypeError, "z"),
}


@BACKENDS
@pytest.mark.parametrize("fn", [mmrec_ops.recurrence, torch.ops.mmrec.recurrence, torch.ops.mmrec.recurrence.default],
                         ids=["mmrec_ops", "torch.ops", "torch.ops.default"])
@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_names_the_argument(backend, device, fn, case):
    corrupt, exc, name = BAD_CALLS[case]
    with pytest.raises(exc, match=rf"\b{name}\b"):
        run(backend, fn, *corrupt(*_valid(device)))
