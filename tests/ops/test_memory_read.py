"""memory_read (SPEC.md, op 5) on every backend that serves it: Hypothesis against the float64 reference, an
independent oracle (the unfused composition: reference mdi, then the block's read math written out here),
gradients against autograd of that oracle, gradcheck, opcheck, torch.compile, segment equivalence, poisoned
outputs fully written, and named errors for bad calls."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import mmrec_ops
from mmrec_ops import reference

from .common import assert_close, backend_cases, dtypes_for, grads, layout, leaf, rel_err, run, tol_for

CASES = backend_cases("memory_read")
NAMES = ("q", "h", "v", "mod", "base", "Ms", "m0")
LAYOUTS = ["contig", "noncontig", "expanded", "sliced"]


@st.composite
def problems(draw):
    C = draw(st.integers(1, 6))
    return dict(B=draw(st.integers(1, 2)), T=draw(st.one_of(st.just(1), st.integers(1, 20))),
                N=draw(st.integers(1, 3)), S=draw(st.integers(1, 4)), Hr=draw(st.integers(1, 3)),
                dh=draw(st.sampled_from([1, 2, 3, 5, 8, 16])), C=C, k0=draw(st.integers(0, C - 1)),
                has_m0=draw(st.booleans()), eps=draw(st.sampled_from([1e-6, 1e-3])),
                norm_eps=draw(st.sampled_from([1e-6, 1e-2])), layout=draw(st.sampled_from(LAYOUTS)),
                seed=draw(st.integers(0, 2**31 - 1)))


def make(p, dtype=torch.float64, device="cpu"):
    """(q, h, v, mod, base, Ms, m0) in `dtype`; the sizes of problems()."""
    g = torch.Generator().manual_seed(p["seed"])
    B, T, N, S, D = p["B"], p["T"], p["N"], p["S"], p["Hr"] * p["dh"]
    L = -(-(p["k0"] + T) // p["C"])
    rn = lambda *shape: torch.randn(shape, generator=g, dtype=torch.float64)  # noqa: E731
    xs = [2 * rn(B, T, D), rn(B, T, D) * 3, rn(B, T, D), 2 * rn(B, T, N), 1 + 2 * rn(N, D), rn(B, L, S, D),
          rn(B, N, D) if p["has_m0"] else None]
    laid_out = (0, 1, 2, 3, 5) if p["layout"] == "sliced" else (1, 5)   # sliced: q, h, v, mod as column views
    kinds = [p["layout"] if i in laid_out else "contig" for i in range(7)]
    return [None if x is None else layout(x.to(device=device, dtype=dtype), kind) for x, kind in zip(xs, kinds)]


def config(p):
    return (p["k0"], p["C"], p["Hr"], p["eps"], p["norm_eps"])


def unfused(q, h, v, mod, base, Ms, m0, k0, C, Hr, eps, norm_eps):
    """The unfused path of the block: reference mdi builds [B, T, N, D], then the read as MMRecBlock wrote it
    (chunk padding, einsums per item kind, one softmax over the concatenated scores)."""
    B, T, D = q.shape
    N, L, S, dh = base.shape[0], Ms.shape[1], Ms.shape[2], D // Hr
    m = reference.mdi(v, mod, base, m0, eps)

    def rms(x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm_eps)

    def to_chunks(x):
        pad = (0, 0) * (x.dim() - 2) + (k0, L * C - k0 - T)
        return F.pad(x, pad).view(B, L, C, *x.shape[2:])

    def from_chunks(x):
        return x.reshape(B, L * C, *x.shape[3:])[:, k0:k0 + T]

    qh, nh = q.view(B, T, Hr, dh), rms(h.view(B, T, Hr, dh))
    nm, nM = rms(m.view(B, T, N, Hr, dh)), rms(Ms.reshape(B, L, S, Hr, dh))
    score_h = (qh * nh).sum(-1, keepdim=True)
    score_m = torch.einsum("bthd,btnhd->bthn", qh, nm)
    score_M = from_chunks(torch.einsum("blchd,blshd->blchs", to_chunks(qh), nM))
    w = torch.softmax(torch.cat([score_h, score_m, score_M], -1) / math.sqrt(dh), -1)
    w_h, w_m, w_M = w.split([1, N, S], -1)
    r = w_h * nh + torch.einsum("bthn,btnhd->bthd", w_m, nm)
    r = r + from_chunks(torch.einsum("blchs,blshd->blchd", to_chunks(w_M), nM))
    return r.reshape(B, T, D), m[:, -1]


def to64(xs):
    return [None if x is None else x.detach().double() for x in xs]


def assert_close_to_scale(out, want, scale, tol, what):
    assert out.shape == want.shape, f"{what}: shape {tuple(out.shape)} != {tuple(want.shape)}"
    out64, want64 = out.detach().double().cpu(), want.detach().double().cpu()
    assert torch.isfinite(out64).all(), f"{what}: non-finite values"
    denom = max(want64.abs().max().item(), scale)
    err = (out64 - want64).abs().max().item() / denom
    assert err < tol, f"{what}: max|out-want| / {denom:.3e} = {err:.3e} (tolerance {tol:.1e})"


def test_reference_equals_unfused_composition():
    p = dict(B=2, T=11, N=3, S=2, Hr=2, dh=4, C=4, k0=3, has_m0=True, eps=1e-6, norm_eps=1e-6, layout="contig",
             seed=0)
    xs = make(p)
    for got, want in zip(reference.memory_read(*xs, *config(p)), unfused(*xs, *config(p))):
        assert_close(got, want, 1e-13, "reference vs unfused")


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@given(p=problems())
def test_matches_float64_reference(backend, device, dtype, p):
    if dtype not in (torch.float64, torch.float32) and dtype not in dtypes_for(backend, device):
        return
    xs = make(p, dtype, device)
    r, m_last = run(backend, mmrec_ops.memory_read, *xs, *config(p))
    assert r.dtype == dtype and m_last.dtype == dtype and r.device.type == device
    want_r, want_m = reference.memory_read(*to64(xs), *config(p))
    tol = tol_for(dtype, 1e-6)
    assert_close(r, want_r, tol, f"r {dtype}")
    assert_close(m_last, want_m, tol, f"m_last {dtype}")


@pytest.mark.parametrize("backend,device", CASES)
@settings(max_examples=25)
@given(p=problems())
def test_float64_equals_unfused_oracle_with_gradients(backend, device, p):
    """Forward and all seven gradients (through r and m_last) against autograd of the unfused composition."""
    xs = [None if x is None else leaf(x) for x in make(p, torch.float64, device)]
    inputs = [x for x in xs if x is not None]
    r, m_last = run(backend, mmrec_ops.memory_read, *xs, *config(p))
    ys = [None if x is None else leaf(x) for x in xs]
    want_r, want_m = unfused(*ys, *config(p))
    assert_close(r, want_r, 1e-12, "r")
    assert_close(m_last, want_m, 1e-12, "m_last")
    gen = torch.Generator().manual_seed(p["seed"])
    gr, gm = torch.randn(r.shape, generator=gen, dtype=torch.float64), torch.randn(m_last.shape, generator=gen,
                                                                                   dtype=torch.float64)
    gr, gm = gr.to(device), gm.to(device)
    got = torch.autograd.grad((r, m_last), inputs, (gr, gm))
    want = torch.autograd.grad((want_r, want_m), [y for y in ys if y is not None], (gr, gm))
    names = [n for n, x in zip(NAMES, xs) if x is not None]
    for name, g, w in zip(names, got, want):
        assert_close_to_scale(g, w, 1e-3, 1e-10, f"d{name}")


@pytest.mark.parametrize("backend,device", CASES)
@settings(max_examples=15)
@given(p=problems())
def test_float32_gradients(backend, device, p):
    xs = [None if x is None else leaf(x) for x in make(p, torch.float32, device)]
    inputs = [x for x in xs if x is not None]
    got = grads(run(backend, mmrec_ops.memory_read, *xs, *config(p))[0], inputs, p["seed"])
    ys = [None if x is None else leaf(x.detach().double()) for x in xs]
    want = grads(reference.memory_read(*ys, *config(p))[0], [y for y in ys if y is not None], p["seed"])
    # At dh = 1 an RMS-normalised item is x / sqrt(x^2 + norm_eps) ~ sign(x) and its gradient rho (1 - n^2) dn
    # loses 1 - n^2 to cancellation: the float32 run of the reference itself is off by up to ~1e-4 there. The
    # kernel may be off by 4x the float32 reference's own error, and never by more than 1e-4 where that is small.
    zs = [None if x is None else leaf(x.detach()) for x in xs]
    with mmrec_ops.backend("ref"):
        own = grads(mmrec_ops.memory_read(*zs, *config(p))[0], [z for z in zs if z is not None], p["seed"])
    for name, g, w, o in zip([n for n, x in zip(NAMES, xs) if x is not None], got, want, own):
        assert g.dtype == torch.float32
        floor = max(w.abs().max().item(), 1e-2)
        tol = max(1e-4, 4 * (o.double().cpu() - w.cpu()).abs().max().item() / floor)
        assert_close_to_scale(g, w, 1e-2, tol, f"d{name}")


SMALL = dict(B=2, T=5, N=2, S=2, Hr=2, dh=2, C=3, k0=1, has_m0=True, eps=1e-6, norm_eps=1e-3, layout="contig",
             seed=3)


@pytest.mark.parametrize("backend,device", CASES)
def test_gradcheck(backend, device):
    # Triton under the interpreter pads every program to 16-wide tiles (tl.dot) and one call takes ~1 s: the full
    # Jacobian (~450 calls) took 561-707 s there, so it is checked along random directions (fast_mode) instead;
    # every gradient is also compared elementwise with the float64 reference in the other tests.
    fast = backend == "triton" and device == "cpu"
    xs = tuple(leaf(x) for x in make(SMALL, torch.float64, device))
    assert run(backend, torch.autograd.gradcheck, mmrec_ops.memory_read, (*xs, *config(SMALL)), eps=1e-6,
               atol=1e-6, rtol=1e-4, fast_mode=fast)


@pytest.mark.parametrize("backend,device", CASES)
def test_opcheck(backend, device):
    xs = tuple(leaf(x) for x in make(SMALL, torch.float32, device))
    run(backend, torch.library.opcheck, torch.ops.mmrec.memory_read.default, (*xs, *config(SMALL)))


@pytest.mark.parametrize("backend,device", CASES)
def test_compile_fullgraph_equals_eager(backend, device):
    torch._dynamo.reset()
    xs = [leaf(x) for x in make(SMALL, torch.float32, device)]

    def fn(*args):
        r, m_last = mmrec_ops.memory_read(*args, *config(SMALL))
        return r.sum(-1) + m_last.sum((1, 2))[:, None]

    eager = run(backend, fn, *xs)
    compiled = run(backend, torch.compile(fn, fullgraph=True), *xs)
    assert_close(compiled, eager, 1e-6, "compiled forward")
    # float32 rounding: the compiled graph hands the backward its incoming gradients in another layout, and the
    # reduced gradients (dbase, dmod) then differ in the last bits (seen: 1.3e-6 on triton under the interpreter)
    for ge, gc in zip(grads(eager, xs), grads(compiled, xs)):
        assert_close(gc, ge, 1e-5, "compiled backward")


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k0,split", [(0, 1), (2, 3), (2, 4), (3, 7), (1, 9)])
def test_segments_equal_one_call(backend, device, dtype, k0, split):
    p = dict(SMALL, T=10, C=4, k0=k0)
    q, h, v, mod, base, Ms, m0 = make(p, dtype, device)
    whole_r, whole_m = run(backend, mmrec_ops.memory_read, q, h, v, mod, base, Ms, m0, k0, 4, p["Hr"])
    r1, m1 = run(backend, mmrec_ops.memory_read, q[:, :split], h[:, :split], v[:, :split], mod[:, :split], base,
                 Ms[:, :-(-(k0 + split) // 4)], m0, k0, 4, p["Hr"])
    k1 = (k0 + split) % 4
    r2, m2 = run(backend, mmrec_ops.memory_read, q[:, split:], h[:, split:], v[:, split:], mod[:, split:], base,
                 Ms[:, (k0 + split) // 4:], m1, k1, 4, p["Hr"])
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert_close(torch.cat([r1, r2], 1), whole_r, tol, "r of two segments")
    assert_close(m2, whole_m, tol, "m_last of two segments")


@pytest.mark.parametrize("backend,device", CASES)
def test_outputs_and_gradients_fully_written(backend, device):
    """conftest NaN-poisons every kernel output: any element left unwritten shows up here. m0 = None too."""
    p = dict(SMALL, T=7, C=2, k0=1, has_m0=False)
    xs = [None if x is None else leaf(x) for x in make(p, torch.float32, device)]
    r, m_last = run(backend, mmrec_ops.memory_read, *xs, *config(p))
    assert torch.isfinite(r).all() and torch.isfinite(m_last).all()
    inputs = [x for x in xs if x is not None]
    for name, g in zip(NAMES, torch.autograd.grad((r.sum() + m_last.sum(),), inputs)):
        assert torch.isfinite(g).all(), f"d{name} has non-finite elements"
    (g_only_m,) = torch.autograd.grad(run(backend, mmrec_ops.memory_read, *xs, *config(p))[1].sum(), [xs[0]],
                                      allow_unused=True)
    assert g_only_m is None or (g_only_m == 0).all()


def test_m0_none_equals_zeros():
    p = dict(SMALL, has_m0=True)
    xs = make(p)
    with_none = mmrec_ops.memory_read(*xs[:6], None, *config(p))
    with_zeros = mmrec_ops.memory_read(*xs[:6], torch.zeros_like(xs[6]), *config(p))
    for a, b in zip(with_none, with_zeros):
        assert torch.equal(a, b)


def _bad_calls():
    p = dict(SMALL)
    q, h, v, mod, base, Ms, m0 = make(p, torch.float32)
    k0, C, Hr = p["k0"], p["C"], p["Hr"]
    ok = (q, h, v, mod, base, Ms, m0, k0, C, Hr)
    return [
        ("q", TypeError, (q.long(),) + ok[1:]),
        ("h", ValueError, (q, h[:, :-1]) + ok[2:]),
        ("v", TypeError, (q, h, v.double()) + ok[3:]),
        ("mod", ValueError, (q, h, v, mod[..., :1]) + ok[4:]),
        ("base", ValueError, ok[:4] + (base[:, :-1],) + ok[5:]),
        ("Ms", ValueError, ok[:5] + (Ms[:, :-1],) + ok[6:]),
        ("Ms", ValueError, ok[:5] + (Ms[0],) + ok[6:]),
        ("m0", ValueError, ok[:6] + (m0[:1],) + ok[7:]),
        ("k0", ValueError, ok[:7] + (C,) + ok[8:]),
        ("k0", TypeError, ok[:7] + (1.0,) + ok[8:]),
        ("chunk_len", ValueError, ok[:8] + (0,) + ok[9:]),
        ("n_heads", ValueError, ok[:9] + (3,)),
        ("eps", ValueError, ok + (0.5,)),
        ("norm_eps", ValueError, ok + (1e-6, -1.0)),
        ("q", ValueError, (q[:, :0], h[:, :0], v[:, :0], mod[:, :0]) + ok[4:]),
    ]


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("name,exc,args", _bad_calls(), ids=[f"{c[0]}-{i}" for i, c in enumerate(_bad_calls())])
def test_bad_inputs_raise_named_errors(backend, device, name, exc, args):
    args = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in args)
    with pytest.raises(exc, match=rf"memory_read: {name}\b"):
        run(backend, mmrec_ops.memory_read, *args)


@pytest.mark.parametrize("backend,device", CASES)
def test_deterministic(backend, device):
    xs = [leaf(x) for x in make(dict(SMALL, T=9), torch.float32, device)]
    runs = []
    for _ in range(2):
        r, m_last = run(backend, mmrec_ops.memory_read, *xs, *config(SMALL))
        runs.append((r, m_last, *grads(r, xs)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_rel_err_rejects_nan():
    assert not rel_err(torch.tensor([float("nan")]), torch.tensor([1.0])) < 1.0


@pytest.mark.parametrize("backend,device", CASES)
def test_large_call_matches_oracle(backend, device):
    """Enough work for the C++ kernel's threads (tasks = B x heads) and several checkpoint blocks (T = 70)."""
    p = dict(B=3, T=70, N=4, S=3, Hr=4, dh=16, C=8, k0=5, has_m0=True, eps=1e-6, norm_eps=1e-6, layout="contig",
             seed=11)
    xs = [leaf(x) for x in make(p, torch.float64, device)]
    r, m_last = run(backend, mmrec_ops.memory_read, *xs, *config(p))
    ys = [leaf(x) for x in xs]
    want_r, want_m = unfused(*ys, *config(p))
    assert_close(r, want_r, 1e-12, "r")
    assert_close(m_last, want_m, 1e-12, "m_last")
    got = grads(r, xs, 1)
    want = grads(want_r, ys, 1)
    for name, g, w in zip(NAMES, got, want):
        assert_close_to_scale(g, w, 1e-3, 1e-10, f"d{name}")


@pytest.mark.parametrize("backend,device", CASES)
def test_sliced_inputs_match_oracle(backend, device):
    """q, h, v and mod as column views of one [B, T, 3D + N + 2] buffer (as the block's in-projection gives them)
    and Ms as the first chunks of a longer slot tensor: forward and the gradients through the views against the
    oracle on contiguous leaves."""
    p = dict(B=3, T=70, N=4, S=3, Hr=4, dh=16, C=8, k0=5, has_m0=True, eps=1e-6, norm_eps=1e-6, layout="contig",
             seed=12)
    q, h, v, mod, base, Ms, m0 = make(p, torch.float64, device)
    B, T, D = q.shape
    edge = torch.zeros(B, T, 1, dtype=q.dtype, device=device)
    rows = leaf(torch.cat([edge, q, h, v, mod, edge], -1))                              # [B, T, 3D + N + 2]
    widths = [1, D, D, D, mod.shape[2], 1]
    views = list(rows.split(widths, -1)[1:5])
    slots = leaf(torch.cat([Ms, torch.ones_like(Ms[:, :1])], 1))                        # [B, L + 1, S, D]
    base, m0 = leaf(base), leaf(m0)
    r, m_last = run(backend, mmrec_ops.memory_read, *views, base, slots[:, :Ms.shape[1]], m0, *config(p))
    ys = [leaf(x) for x in (q, h, v, mod, base, Ms, m0)]
    want_r, want_m = unfused(*ys, *config(p))
    assert_close(r, want_r, 1e-12, "r")
    assert_close(m_last, want_m, 1e-12, "m_last")
    d_rows, d_base, d_slots, d_m0 = grads(r, [rows, base, slots, m0], 3)
    want = grads(want_r, ys, 3)
    got = list(d_rows.split(widths, -1)[1:5]) + [d_base, d_slots[:, :Ms.shape[1]], d_m0]
    for name, g, w in zip(NAMES, got, want):
        assert_close_to_scale(g, w, 1e-3, 1e-10, f"d{name}")
    assert not d_rows[..., [0, -1]].any() and not d_slots[:, -1].any()


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("k0,C,T", [(0, 16, 50), (16, 32, 50), (5, 32, 45)])
def test_long_slot_chunks_match_oracle(backend, device, k0, C, T):
    """Slot chunks as long as the Triton time chunk or longer (whole chunks: k0 = 0 or 16; straddled: k0 = 5) over
    several time chunks: float64 forward and gradients against the unfused oracle, float32 forward to 1e-6."""
    p = dict(B=1, T=T, N=2, S=3, Hr=2, dh=8, C=C, k0=k0, has_m0=True, eps=1e-6, norm_eps=1e-6, layout="contig",
             seed=5)
    xs = [leaf(x) for x in make(p, torch.float64, device)]
    r, m_last = run(backend, mmrec_ops.memory_read, *xs, *config(p))
    ys = [leaf(x) for x in xs]
    want_r, want_m = unfused(*ys, *config(p))
    assert_close(r, want_r, 1e-12, "r")
    assert_close(m_last, want_m, 1e-12, "m_last")
    for name, g, w in zip(NAMES, grads(r, xs, 2), grads(want_r, ys, 2)):
        assert_close_to_scale(g, w, 1e-3, 1e-10, f"d{name}")
    r32, _ = run(backend, mmrec_ops.memory_read, *make(p, torch.float32, device), *config(p))
    assert_close(r32, want_r, 1e-6, "r float32")
