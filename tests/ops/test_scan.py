"""scan-specific properties: Hypothesis against the float64 reference and SPEC.md's gradients, layouts, reverse,
extreme decays, the cumulative product over 65,536 steps, and named errors for bad calls."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mmrec_ops
from mmrec_ops import reference

from .common import assert_bad_calls_raise, assert_close, backend_cases, grads, layout, leaf, run, spec_grads, tol_for

CASES = backend_cases("scan")


@st.composite
def scan_problems(draw):
    B = draw(st.integers(1, 4))
    T = draw(st.one_of(st.just(1), st.integers(1, 70)))
    D = draw(st.one_of(st.integers(1, 9), st.sampled_from([16, 31, 33, 64, 100])))
    decay = draw(st.sampled_from(["uniform", "signed", "near0", "near1"]))
    return dict(B=B, T=T, D=D, decay=decay, has_h0=draw(st.booleans()), reverse=draw(st.booleans()),
                layout_a=draw(st.sampled_from(["contig", "noncontig", "expanded"])),
                layout_b=draw(st.sampled_from(["contig", "noncontig", "expanded"])),
                seed=draw(st.integers(0, 2**31 - 1)))


def _make(p, dtype, device):
    g = torch.Generator().manual_seed(p["seed"])
    shape = (p["B"], p["T"], p["D"])
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    a = {"uniform": u, "signed": 2 * u - 1, "near0": u * 1e-3, "near1": 1 - u * 1e-3}[p["decay"]]
    b = torch.randn(shape, generator=g, dtype=torch.float64)
    h0 = torch.randn(p["B"], p["D"], generator=g, dtype=torch.float64) if p["has_h0"] else None
    cast = lambda x: None if x is None else x.to(device=device, dtype=dtype)  # noqa: E731
    return layout(cast(a), p["layout_a"]), layout(cast(b), p["layout_b"]), cast(h0)


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(p=scan_problems())
def test_matches_float64_reference(backend, device, dtype, p):
    a, b, h0 = _make(p, dtype, device)
    out = run(backend, mmrec_ops.scan, a, b, h0, p["reverse"])
    ref = reference.scan(a.double(), b.double(), None if h0 is None else h0.double(), p["reverse"])
    assert_close(out, ref, tol_for(dtype, 1e-6))


@pytest.mark.parametrize("backend,device", CASES)
@given(p=scan_problems())
def test_gradients_match_spec(backend, device, p):
    a, b, h0 = (None if x is None else leaf(x) for x in _make(p, torch.float64, device))
    inputs = [x for x in (a, b, h0) if x is not None]
    out = run(backend, mmrec_ops.scan, a, b, h0, p["reverse"])
    got = grads(out, inputs, p["seed"])
    want = spec_grads("scan", (a, b, h0, p["reverse"]), out.shape, p["seed"])
    for g, w in zip(got, want):
        assert_close(g, w, 1e-10, "gradient")


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_every_input(backend, device, reverse):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 6, 5, generator=g, dtype=torch.float64).to(device).requires_grad_()
    b = torch.randn(2, 6, 5, generator=g, dtype=torch.float64).to(device).requires_grad_()
    h0 = torch.randn(2, 5, generator=g, dtype=torch.float64).to(device).requires_grad_()
    assert run(backend, torch.autograd.gradcheck, lambda *x: mmrec_ops.scan(*x, reverse=reverse), (a, b, h0))


@pytest.mark.parametrize("backend,device", [c for c in CASES if c.values[0] != "ref"])
def test_cumulative_product_over_long_sequences(backend, device):
    """prod_{i<=t} gamma_i = scan(gamma, 0, h0=1) over 65,536 steps in float32 against the float64 product: no log-space
    round trip, so no drift and no NaN where the product underflows."""
    g = torch.Generator().manual_seed(0)
    # Triton's CPU interpreter executes every tile op in Python: minutes at T = 65,536, so 4,096 there.
    T = 4096 if backend == "triton" and device == "cpu" else 65536
    gamma = (0.9 + 0.1 * torch.rand(2, T, 8, generator=g)).clamp(max=1 - 2**-24).to(device)
    want = torch.cumprod(gamma.double(), dim=1)
    zero = torch.zeros(1, 1, 1, device=device).expand_as(gamma)
    prod = run(backend, mmrec_ops.scan, gamma, zero, torch.ones(2, 8, device=device))
    assert_close(prod, want, 1e-6, "scan cumprod vs float64 cumprod")
    normal = want > 1e-30  # elementwise, wherever float32 still holds the value to full precision
    elementwise = ((prod.double() - want).abs() / want)[normal].max().item()
    assert elementwise < 1e-5, f"relative error {elementwise:.2e} along the product"


# Triton's CPU interpreter would take minutes at this size; it runs the same kernel at the property-test sizes.
@pytest.mark.parametrize("backend,device", [c for c in CASES if c.values != ("triton", "cpu")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("B,D", [(3, 1670), (4, 1666)])
def test_wide_batches_forward_and_gradients(backend, device, dtype, reverse, B, D):
    """B*D = 5,010 and 6,664 channels (float32: the CUDA backend's streaming kernel, one block per 32 channels once
    that fills an H100/H200, 6,664 / 32 leaving a partial last block; bf16: its chunked kernel's one-channel
    path, D not a multiple of 4), odd T, h0, forward and every gradient against the float64 reference."""
    p = dict(B=B, T=301, D=D, decay="uniform", has_h0=True, reverse=reverse, layout_a="contig",
             layout_b="contig", seed=7)
    a, b, h0 = (leaf(x) for x in _make(p, dtype, device))
    out = run(backend, mmrec_ops.scan, a, b, h0, reverse)
    assert_close(out, reference.scan(a.double(), b.double(), h0.double(), reverse), tol_for(dtype, 1e-6))
    want = spec_grads("scan", (a, b, h0, reverse), out.shape)
    for name, g, w in zip("a b h0".split(), grads(out, [a, b, h0]), want):
        assert_close(g, w, tol_for(dtype, 1e-5), f"d{name}")


@pytest.mark.parametrize("backend,device", CASES)
def test_reverse_equals_flipped_forward(backend, device):
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 11, 7, generator=g).to(device), torch.randn(3, 11, 7, generator=g).to(device)
    h0 = torch.randn(3, 7, generator=g).to(device)
    rev = run(backend, mmrec_ops.scan, a, b, h0, True)
    fwd = run(backend, mmrec_ops.scan, a.flip(1), b.flip(1), h0, False).flip(1)
    assert_close(rev, fwd, 1e-6)


def _bad_calls(device):
    a = torch.rand(2, 5, 3, device=device)
    b = torch.randn(2, 5, 3, device=device)
    return [
        ((a[0], b[0]), ValueError, "a must have 3 dims"),
        ((a, b[:, :4]), ValueError, "b must have shape"),
        ((a, b, torch.zeros(2, 4, device=device)), ValueError, "h0 must have shape"),
        ((a, b, torch.zeros(2, 3, 1, device=device)), ValueError, "h0 must have 2 dims"),
        ((a, b.double()), TypeError, "b has dtype"),
        ((a.long(), b), TypeError, "a must be a floating tensor"),
        ((a[:, :0], b[:, :0]), ValueError, "a must not be empty"),
        ((a, b, None, 2), TypeError, "reverse must be a bool, got int"),
        ((a, b, None, 1.0), TypeError, "reverse must be a bool, got float"),
        ((a, "b"), TypeError, "b must be a torch.Tensor"),
    ]


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("entry", ["mmrec_ops.scan", "torch.ops.mmrec.scan", "torch.ops.mmrec.scan.default"])
def test_bad_calls_name_the_argument(backend, device, entry):
    """The public function and the dispatcher's entry points refuse the same calls the same way: torch's
    argument parser alone would take reverse=2 as True and "b" as a RuntimeError."""
    fn = {"mmrec_ops.scan": mmrec_ops.scan, "torch.ops.mmrec.scan": torch.ops.mmrec.scan,
          "torch.ops.mmrec.scan.default": torch.ops.mmrec.scan.default}[entry]
    assert_bad_calls_raise(backend, fn, _bad_calls(device))
