"""mdi-specific properties: Hypothesis against a float64 run of the reference (odd sizes, T = 1, N = 1,
layouts, optional m0, decays near 0 and 1 with the clamp active), the clamp's zero-gradient region,
the multi-threaded tilings, and named errors for bad calls."""
from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import mmrec_ops
from mmrec_ops import reference

from .common import (assert_bad_calls_raise, assert_close, backend_cases, grads, in_three_threads, layout, leaf, run,
                     spec_grads, tol_for)
from .spec_gradients import cotangent

CASES = backend_cases("mdi")
# Threading and streaming-store checks of the C++ CPU kernel itself.
CPU_KERNEL = [c for c in CASES if c.values[0] == "cpu"]
LAYOUTS = ["contig", "noncontig", "expanded"]

# (mod, base) logit ranges: "near1" and "near0" put most decays against the clamp at 1 - eps and eps;
# "extreme" mixes both with unclamped ones.
REGIMES = {"mixed": ((-3, 3), (-2, 4)), "near1": ((8, 20), (8, 20)), "near0": ((-30, -10), (-5, 5)),
           "extreme": ((-40, 40), (-40, 40))}


@st.composite
def mdi_problems(draw):
    return dict(B=draw(st.integers(1, 3)), T=draw(st.one_of(st.just(1), st.integers(1, 40))),
                N=draw(st.one_of(st.just(1), st.integers(1, 5))),
                D=draw(st.one_of(st.integers(1, 9), st.sampled_from([16, 31, 33, 100]))),
                regime=draw(st.sampled_from(sorted(REGIMES))), has_m0=draw(st.booleans()),
                eps=draw(st.sampled_from([1e-6, 1e-3, 0.1])),
                layouts=[draw(st.sampled_from(LAYOUTS)) for _ in range(4)], seed=draw(st.integers(0, 2**31 - 1)))


def _make(p, dtype, device="cpu"):
    g = torch.Generator().manual_seed(p["seed"])
    B, T, N, D = p["B"], p["T"], p["N"], p["D"]
    (mlo, mhi), (blo, bhi) = REGIMES[p["regime"]]
    u = lambda *shape: torch.rand(shape, generator=g, dtype=torch.float64)  # noqa: E731
    v = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    mod = mlo + (mhi - mlo) * u(B, T, N)
    base = blo + (bhi - blo) * u(N, D)
    m0 = torch.randn(B, N, D, generator=g, dtype=torch.float64) if p["has_m0"] else None
    xs = [None if x is None else layout(x.to(device=device, dtype=dtype), kind)
          for x, kind in zip((v, mod, base, m0), p["layouts"])]
    return xs


def assert_close_to_scale(out, ref, scale: float, tol: float, what: str = "output") -> None:
    """max|out - ref| / max(max|ref|, scale): an EMA's rounding error follows the size of what it
    averages, so where decays sit at 1 - eps (outputs ~eps |v|) the error is measured against |v|."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    assert out64.shape == ref64.shape, f"{what}: shape {tuple(out64.shape)} != {tuple(ref64.shape)}"
    assert torch.isfinite(out64).all(), f"{what}: non-finite values"
    denom = max(ref64.abs().max().item(), scale) or 1.0
    err = (out64 - ref64).abs().max().item() / denom
    assert err < tol, f"{what}: max|out-ref| / {denom:.3e} = {err:.3e} (tolerance {tol:.1e})"


# Gradients are compared against max(max|want|, floor). Inputs and cotangents are O(1); at extreme logits
# autograd's sigmoid'(x) = y (1 - y) loses 1 - y to cancellation (absolute error ~1e-16 per term), and
# where every decay is near 1, dv = sum delta (1 - gamma) is ~eps |delta|: there only absolute errors
# below floor * tol are left unchecked.
GRAD_FLOOR = {torch.float64: 1e-3, torch.float32: 1e-2, torch.bfloat16: 1e-2}


def _scale(*xs) -> float:
    return max(x.detach().abs().max().item() for x in xs if x is not None)


def _ref64(v, mod, base, m0, eps):
    return reference.mdi(v.double(), mod.double(), base.double(), None if m0 is None else m0.double(), eps)


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@given(p=mdi_problems())
def test_matches_float64_reference(backend, device, dtype, p):
    v, mod, base, m0 = _make(p, dtype, device)
    out = run(backend, mmrec_ops.mdi, v, mod, base, m0, p["eps"])
    assert out.dtype == dtype and out.shape == (p["B"], p["T"], p["N"], p["D"])
    assert_close_to_scale(out, _ref64(v, mod, base, m0, p["eps"]), _scale(v, m0), tol_for(dtype, 1e-5))


@pytest.mark.parametrize("backend,device", CASES)
@given(p=mdi_problems())
def test_gradients_match_spec(backend, device, p):
    """float64 against SPEC.md's gradients (torch.clamp's gradient mask included)."""
    xs = [None if x is None else leaf(x) for x in _make(p, torch.float64, device)]
    inputs = [x for x in xs if x is not None]
    out = run(backend, mmrec_ops.mdi, *xs, p["eps"])
    got = grads(out, inputs, p["seed"])
    want = spec_grads("mdi", (*xs, p["eps"]), out.shape, p["seed"])
    for name, g, w in zip("v mod base m0".split(), got, want):
        assert_close_to_scale(g, w, GRAD_FLOOR[torch.float64], 1e-10, f"d{name}")


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@settings(max_examples=15)
@given(p=mdi_problems())
def test_low_precision_gradients(backend, device, dtype, p):
    # With eps below float32's resolution at 1 (6e-8), float32 and float64 round sigmoid * sigmoid to
    # different sides of 1 - eps for many decays, and the clamp's gradient jumps there (the float32 run
    # of the reference disagrees with float64 just as much); the float64 test covers those regimes.
    assume(not (p["regime"] in ("near1", "extreme") and p["eps"] < 1e-4))
    xs = [None if x is None else leaf(x) for x in _make(p, dtype, device)]
    inputs = [x for x in xs if x is not None]
    out = run(backend, mmrec_ops.mdi, *xs, p["eps"])
    got = grads(out, inputs, p["seed"])
    want = spec_grads("mdi", (*xs, p["eps"]), out.shape, p["seed"])
    for name, g, w in zip("v mod base m0".split(), got, want):
        assert g.dtype == dtype
        assert_close_to_scale(g, w, GRAD_FLOOR[dtype], 1e-4 if dtype == torch.float32 else 3e-2, f"d{name}")


@pytest.mark.parametrize("backend,device", CASES)
def test_clamped_decays_have_zero_gradient(backend, device):
    """Bank 0 sits above 1 - eps, bank 1 below eps, bank 2 inside: dmod and dbase vanish exactly for the
    clamped banks (torch.clamp's mask), and every gradient equals SPEC.md's."""
    g = torch.Generator().manual_seed(0)
    B, T, N, D = 2, 7, 3, 5
    v = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    mod = torch.randn(B, T, N, generator=g, dtype=torch.float64)
    mod[..., 0], mod[..., 1] = 30.0, -30.0
    base = torch.randn(N, D, generator=g, dtype=torch.float64)
    base[0], base[1] = 30.0, 0.5
    m0 = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    v, mod, base, m0 = (leaf(x.to(device)) for x in (v, mod, base, m0))
    inputs = [v, mod, base, m0]
    out = run(backend, mmrec_ops.mdi, *inputs)
    got, want = grads(out, inputs), spec_grads("mdi", inputs, out.shape)
    for name, gt, wt in zip("v mod base m0".split(), got, want):
        assert_close(gt, wt, 1e-10, f"d{name}")
    dmod, dbase = got[1], got[2]
    assert torch.all(dmod[..., :2] == 0) and torch.all(dbase[:2] == 0)
    assert torch.all(dmod[..., 2] != 0) and torch.all(dbase[2] != 0)
    # Clamped decays are exactly eps and 1 - eps: m_0 of bank 0 keeps (1 - eps) of m0.
    m = run(backend, mmrec_ops.mdi, *inputs).detach()
    eps = 1e-6
    assert_close(m[:, 0, 0], (1 - eps) * m0[:, 0].detach() + eps * v[:, 0].detach(), 1e-12, "bank at 1 - eps")
    assert_close(m[:, 0, 1], eps * m0[:, 1].detach() + (1 - eps) * v[:, 0].detach(), 1e-12, "bank at eps")


@pytest.mark.parametrize("backend,device", CASES)
def test_backward_writes_dm0_without_m0(backend, device):
    """m0 = None: the backward op still returns dL/dm0 at m0 = 0 (= gamma_0 * delta_0)."""
    g = torch.Generator().manual_seed(1)
    B, T, N, D = 2, 5, 3, 4
    v, mod = torch.randn(B, T, D, generator=g, dtype=torch.float64), torch.randn(B, T, N, generator=g,
                                                                                  dtype=torch.float64)
    base = torch.randn(N, D, generator=g, dtype=torch.float64)
    grad = cotangent((B, T, N, D), 1)
    v, mod, base, grad = (x.to(device) for x in (v, mod, base, grad))
    with mmrec_ops.backend(backend):
        m = mmrec_ops.mdi(v, mod, base)
        dv, dmod, dbase, dm0 = torch.ops.mmrec.mdi_backward(grad, v, mod, base, None, m, 1e-6, backend)
    zeros = torch.zeros(B, N, D, dtype=torch.float64, device=device)
    want = spec_grads("mdi", (v, mod, base, zeros), grad.shape, 1)
    for name, gt, wt in zip("v mod base m0".split(), (dv, dmod, dbase, dm0), want):
        assert_close(gt, wt, 1e-10, f"d{name}")


# Shapes whose work passes the parallel threshold (2^15 elements): B = 1 splits D into slices (dmod
# summed over slices), B = 3 spreads whole rows, N = 200 forces the narrowest slice.
THREADED = [(1, 32, 4, 260), (3, 24, 2, 230), (1, 3, 200, 64)]


def _threaded_errors(shapes):
    """Max relative errors of the cpu kernels against the float64 reference's forward and SPEC.md's gradients."""
    out = []
    for i, (B, T, N, D) in enumerate(shapes):
        g = torch.Generator().manual_seed(i)
        xs = [torch.randn(B, T, D, generator=g, dtype=torch.float64), 3 * torch.randn(B, T, N, generator=g,
                                                                                      dtype=torch.float64),
              2 * torch.randn(N, D, generator=g, dtype=torch.float64),
              torch.randn(B, N, D, generator=g, dtype=torch.float64)]
        xs = [leaf(x) for x in xs]
        with mmrec_ops.backend("cpu"):
            m = mmrec_ops.mdi(*xs)
        want_m = reference.mdi(*xs)
        got, want = grads(m, xs, i), spec_grads("mdi", xs, m.shape, i)
        errs = [rel(m, want_m)] + [rel(a, b) for a, b in zip(got, want)]
        out.append(errs)
    return out


def rel(a, b):
    return ((a.detach() - b.detach()).abs().max() / b.detach().abs().max().clamp_min(1e-300)).item()


@pytest.mark.parametrize("backend,device", CPU_KERNEL)
def test_threaded_tilings_match_reference(backend, device):
    for shape, errs in zip(THREADED, _threaded_errors(THREADED)):
        assert max(errs) < 1e-10, f"{shape}: {errs}"


@pytest.mark.parametrize("backend,device", CPU_KERNEL)
def test_three_threads_match_reference(backend, device):
    """Uneven task counts per thread: a fresh process with OMP_NUM_THREADS=3."""
    for shape, errs in zip(THREADED, in_three_threads("test_mdi", "_threaded_errors", THREADED)):
        assert max(errs) < 1e-10, f"{shape}: {errs}"


@pytest.mark.parametrize("backend,device", CPU_KERNEL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_outputs_equal_cached_ones(backend, device, dtype):
    """Outputs of 16 MB and more (m; dv in the backward) leave through non-temporal stores: the whole
    batch (streamed) equals each batch element run alone (normal stores)."""
    g = torch.Generator().manual_seed(3)
    B, T, N, D = 2, 128, 4, 16384 if dtype == torch.float32 else 32768
    xs = [leaf(x.to(dtype)) for x in (torch.randn(B, T, D, generator=g), 3 * torch.randn(B, T, N, generator=g),
                                       2 * torch.randn(N, D, generator=g), torch.randn(B, N, D, generator=g))]
    v, mod, base, m0 = xs
    assert v.numel() * v.element_size() >= 16 << 20 > v[:1].numel() * v.element_size()
    G = torch.randn(B, T, N, D, generator=g).to(dtype)
    with mmrec_ops.backend(backend):
        m = mmrec_ops.mdi(*xs)
        whole = torch.autograd.grad(m, xs, G)
        for b in range(B):
            parts = [v[b:b + 1], mod[b:b + 1], base, m0[b:b + 1]]
            m_b = mmrec_ops.mdi(*parts)
            assert torch.equal(m[b:b + 1], m_b), f"m of batch {b}"
            dv, dmod, dbase, dm0 = torch.autograd.grad(m_b, parts, G[b:b + 1])
            assert torch.equal(whole[0][b:b + 1], dv), f"dv of batch {b}"
            assert torch.equal(whole[3][b:b + 1], dm0), f"dm0 of batch {b}"
            assert_close(dmod, whole[1][b:b + 1], 1e-5 if dtype == torch.float32 else 1e-2, f"dmod of batch {b}")


def _bad_calls(device):
    v, mod, base, m0 = (torch.randn(*shape, device=device) for shape in ((2, 5, 4), (2, 5, 3), (3, 4), (2, 3, 4)))
    return [
        ((v[0], mod, base), ValueError, "v must have 3 dims"),
        ((v, mod[0], base), ValueError, "mod must have 3 dims"),
        ((v, mod, base[0]), ValueError, "base must have 2 dims"),
        ((v, mod, base, m0[0]), ValueError, "m0 must have 3 dims"),
        ((v, mod[..., :2], base), ValueError, "mod must have shape"),       # N of mod != N of base
        ((v, mod, base[:, :3]), ValueError, "base must have shape"),        # D of base != D of v
        ((v, mod[:1], base), ValueError, "mod must have shape"),            # B of mod != B of v
        ((v, mod[:, :4], base), ValueError, "mod must have shape"),         # T of mod != T of v
        ((v, mod, base, m0[:1]), ValueError, "m0 must have shape"),         # B of m0
        ((v, mod, base, m0[:, :2]), ValueError, "m0 must have shape"),      # N of m0
        ((v, mod, base, m0[..., :3]), ValueError, "m0 must have shape"),    # D of m0
        ((v, mod.double(), base), TypeError, "mod has dtype"),
        ((v, mod, base.double()), TypeError, "base has dtype"),
        ((v, mod, base, m0.double()), TypeError, "m0 has dtype"),
        ((v.long(), mod, base), TypeError, "v must be a floating tensor"),
        ((v[:, :0], mod[:, :0], base), ValueError, "v must not be empty"),
        ((v, mod, base, None, 0.0), ValueError, "eps"),
        ((v, mod, base, None, 0.5), ValueError, "eps"),
        ((v, mod, base, None, -1e-6), ValueError, "eps"),
        ((v, mod, base, None, float("nan")), ValueError, "eps"),
        ((v, mod, base, None, float("inf")), ValueError, "eps"),
        ((v, mod, base, None, "1e-6"), TypeError, "eps"),
        ((v, "mod", base), TypeError, "mod"),
    ]


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("fn", [mmrec_ops.mdi, torch.ops.mmrec.mdi, torch.ops.mmrec.mdi.default],
                         ids=["mmrec_ops", "torch.ops", "torch.ops.default"])
def test_bad_calls_name_the_argument(backend, device, fn):
    assert_bad_calls_raise(backend, fn, _bad_calls(device))
