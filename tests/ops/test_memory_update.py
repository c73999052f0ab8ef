"""memory_update-specific properties: Hypothesis against a float64 run of the reference (odd sizes, NC = 1,
S = 1, layouts, sharp and flat addressing, strength 0 and 1), exact identities at strength 0, the
multi-threaded slot splits, and named errors for bad calls."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmrec_ops
from mmrec_ops import reference

from .common import (assert_bad_calls_raise, assert_close, backend_cases, grads, in_three_threads, layout, leaf, run,
                     spec_grads, tol_for)
from .spec_gradients import cotangent

CASES = backend_cases("memory_update")
# Threading and streaming-store checks of the C++ CPU kernel itself.
CPU_KERNEL = [c for c in CASES if c.values[0] == "cpu"]
LAYOUTS = ["contig", "noncontig", "expanded"]
NAMES = ("M0", "key", "value", "strength")


@st.composite
def problems(draw):
    return dict(B=draw(st.integers(1, 3)), NC=draw(st.one_of(st.just(1), st.integers(1, 12))),
                S=draw(st.one_of(st.just(1), st.integers(1, 9))),
                D=draw(st.one_of(st.integers(1, 9), st.sampled_from([16, 33, 64]))),
                strength=draw(st.sampled_from(["uniform", "zero", "one", "binary"])),
                sharpness=draw(st.sampled_from([0.1, 1.0, 8.0])),  # key scale: flat .. near one-hot addressing
                layouts=[draw(st.sampled_from(LAYOUTS)) for _ in range(4)], seed=draw(st.integers(0, 2**31 - 1)))


def _make(p, dtype, device="cpu"):
    g = torch.Generator().manual_seed(p["seed"])
    B, NC, S, D = p["B"], p["NC"], p["S"], p["D"]
    M0 = torch.randn(B, S, D, generator=g, dtype=torch.float64)
    key = p["sharpness"] * torch.randn(B, NC, D, generator=g, dtype=torch.float64)
    value = torch.randn(B, NC, D, generator=g, dtype=torch.float64)
    u = torch.rand(B, NC, generator=g, dtype=torch.float64)
    strength = {"uniform": u, "zero": 0 * u, "one": 0 * u + 1, "binary": (u > 0.5).double()}[p["strength"]]
    return [layout(x.to(device=device, dtype=dtype), kind) for x, kind in zip((M0, key, value, strength), p["layouts"])]


def _ref64(*xs):
    return reference.memory_update(*(x.double() for x in xs))


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@given(p=problems())
def test_matches_float64_reference(backend, device, dtype, p):
    xs = _make(p, dtype, device)
    out = run(backend, mmrec_ops.memory_update, *xs)
    assert out.dtype == dtype and out.shape == (p["B"], p["NC"] + 1, p["S"], p["D"])
    assert torch.equal(out[:, 0], xs[0]), "Ms[:, 0] must be M0"
    assert_close(out, _ref64(*xs), tol_for(dtype, 1e-5))


@pytest.mark.parametrize("backend,device", CASES)
@given(p=problems())
def test_gradients_match_spec(backend, device, p):
    xs = [leaf(x) for x in _make(p, torch.float64, device)]
    out = run(backend, mmrec_ops.memory_update, *xs)
    got, want = grads(out, xs, p["seed"]), spec_grads("memory_update", xs, out.shape, p["seed"])
    for name, g, w in zip(NAMES, got, want):
        assert_close(g, w, 1e-10, f"d{name}")


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@settings(max_examples=15)
@given(p=problems())
def test_low_precision_gradients(backend, device, dtype, p):
    xs = [leaf(x) for x in _make(p, dtype, device)]
    out = run(backend, mmrec_ops.memory_update, *xs)
    got, want = grads(out, xs, p["seed"]), spec_grads("memory_update", xs, out.shape, p["seed"])
    # Errors are measured against the largest gradient of the call: with near one-hot addressing dkey is
    # ~1e-14 (softmax saturated), and its own max is no scale for float32 rounding (seen: 2.1e-14 vs 2.5e-14).
    scale = max(w.abs().max().item() for w in want)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for name, g, w in zip(NAMES, got, want):
        assert g.dtype == dtype
        err = (g.double().cpu() - w).abs().max().item()
        assert err <= tol * scale, f"d{name}: max|out-ref| = {err:.3e} > {tol:.0e} x largest gradient {scale:.3e}"


@pytest.mark.parametrize("backend,device", CASES)
def test_zero_strength_writes_nothing(backend, device):
    """strength = 0: every Ms[:, c] is M0 bit for bit, and key and value get exactly zero gradient."""
    g = torch.Generator().manual_seed(0)
    B, NC, S, D = 2, 6, 5, 7
    M0, key, value = (leaf(torch.randn(*shape, generator=g, dtype=torch.float64).to(device))
                      for shape in ((B, S, D), (B, NC, D), (B, NC, D)))
    strength = leaf(torch.zeros(B, NC, dtype=torch.float64, device=device))
    xs = [M0, key, value, strength]
    Ms = run(backend, mmrec_ops.memory_update, *xs)
    assert torch.equal(Ms, M0.detach()[:, None].expand_as(Ms))
    dM0, dkey, dvalue, dstrength = grads(Ms, xs, 5)
    assert torch.all(dkey == 0) and torch.all(dvalue == 0)
    assert_close(dM0, cotangent(Ms.shape, 5).sum(1), 1e-12, "dM0 = sum of grad over chunks")
    assert_close(dstrength, spec_grads("memory_update", xs, Ms.shape, 5)[3], 1e-10, "dstrength")


@pytest.mark.parametrize("backend,device", CASES)
def test_one_slot_full_strength_copies_the_value(backend, device):
    """S = 1 and strength = 1: the single slot is fully addressed and becomes value_c."""
    g = torch.Generator().manual_seed(1)
    B, NC, D = 3, 5, 9
    M0, key, value = (torch.randn(*shape, generator=g).to(device) for shape in ((B, 1, D), (B, NC, D), (B, NC, D)))
    Ms = run(backend, mmrec_ops.memory_update, M0, key, value, torch.ones(B, NC, device=device))
    assert_close(Ms[:, 1:, 0], value, 1e-6, "Ms[:, c+1, 0] = value_c")


# Shapes whose work passes the parallel threshold (2^15 elements) and whose slots are split when batches
# are fewer than threads (blocks of >= 2^14 elements: one barrier per chunk, dk/dv summed from per-block
# partials): B = 1 into 2 or 3 blocks of 16 slots, S = 3 unevenly, B = 2 on 3 threads, B = 4 whole.
THREADED = [(1, 3, 16, 3072), (1, 2, 3, 11000), (2, 2, 5, 6600), (4, 3, 7, 400)]


def _threaded_errors(shapes):
    """Max relative errors of the cpu kernel against the float64 reference's forward and SPEC.md's gradients, and
    whether a second run is bit-identical."""
    out = []
    for i, (B, NC, S, D) in enumerate(shapes):
        g = torch.Generator().manual_seed(i)
        xs = [leaf(x) for x in (torch.randn(B, S, D, generator=g, dtype=torch.float64),
                                 torch.randn(B, NC, D, generator=g, dtype=torch.float64),
                                 torch.randn(B, NC, D, generator=g, dtype=torch.float64),
                                 torch.rand(B, NC, generator=g, dtype=torch.float64))]
        runs = []
        for _ in range(2):
            with mmrec_ops.backend("cpu"):
                Ms = mmrec_ops.memory_update(*xs)
            runs.append([Ms, *grads(Ms, xs, i)])
        want_Ms = reference.memory_update(*xs)
        want = [want_Ms, *spec_grads("memory_update", xs, want_Ms.shape, i)]
        errs = [rel(a, b) for a, b in zip(runs[0], want)]
        out.append((errs, all(torch.equal(a, b) for a, b in zip(*runs))))
    return out


def rel(a, b):
    return ((a.detach() - b.detach()).abs().max() / b.detach().abs().max().clamp_min(1e-300)).item()


@pytest.mark.parametrize("backend,device", CPU_KERNEL)
def test_threaded_splits_match_reference(backend, device):
    for shape, (errs, same) in zip(THREADED, _threaded_errors(THREADED)):
        assert max(errs) < 1e-10, f"{shape}: {errs}"
        assert same, f"{shape}: two runs differ"


@pytest.mark.parametrize("backend,device", CPU_KERNEL)
def test_three_threads_match_reference(backend, device):
    """Uneven units per thread and three slot blocks per batch: a fresh process with OMP_NUM_THREADS=3."""
    for shape, (errs, same) in zip(THREADED, in_three_threads("test_memory_update", "_threaded_errors", THREADED)):
        assert max(errs) < 1e-10, f"{shape}: {errs}"
        assert same, f"{shape}: two runs differ"


@pytest.mark.parametrize("backend,device", CPU_KERNEL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_output_equals_cached_one(backend, device, dtype):
    """An Ms of 16 MB and more leaves through non-temporal stores: the whole batch (streamed) equals each
    batch element run alone (normal stores), and so do the gradients."""
    g = torch.Generator().manual_seed(3)
    B, NC, S, D = 2, 16, 16, 8192 if dtype == torch.float32 else 16384
    xs = [leaf(x.to(dtype)) for x in (torch.randn(B, S, D, generator=g), torch.randn(B, NC, D, generator=g),
                                       torch.randn(B, NC, D, generator=g), torch.rand(B, NC, generator=g))]
    size = B * (NC + 1) * S * D * xs[0].element_size()
    assert size >= 16 << 20 > size // B
    G = torch.randn(B, NC + 1, S, D, generator=g).to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    with mmrec_ops.backend(backend):
        Ms = mmrec_ops.memory_update(*xs)
        whole = torch.autograd.grad(Ms, xs, G)
        for b in range(B):
            parts = [x[b:b + 1] for x in xs]
            Ms_b = mmrec_ops.memory_update(*parts)
            assert_close(Ms[b:b + 1], Ms_b, tol, f"Ms of batch {b}")
            for name, got, want in zip(NAMES, torch.autograd.grad(Ms_b, parts, G[b:b + 1]), whole):
                assert_close(got, want[b:b + 1], tol, f"d{name} of batch {b}")


def _bad_calls(device):
    M0, key, value = (torch.randn(*shape, device=device) for shape in ((2, 4, 5), (2, 3, 5), (2, 3, 5)))
    s = torch.rand(2, 3, device=device)
    return [
        ((M0[0], key, value, s), ValueError, "M0 must have 3 dims"),
        ((M0, key[0], value, s), ValueError, "key must have 3 dims"),
        ((M0, key, value[0], s), ValueError, "value must have 3 dims"),
        ((M0, key, value, s[0]), ValueError, "strength must have 2 dims"),
        ((M0, key[:1], value, s), ValueError, "key must have shape"),           # B of key
        ((M0, key[..., :4], value, s), ValueError, "key must have shape"),      # D of key
        ((M0, key, value[:, :2], s), ValueError, "value must have shape"),      # NC of value != NC of key
        ((M0, key, value[..., :4], s), ValueError, "value must have shape"),    # D of value
        ((M0, key, value, s[:, :2]), ValueError, "strength must have shape"),   # NC of strength
        ((M0, key, value, s[:1]), ValueError, "strength must have shape"),      # B of strength
        ((M0, key.double(), value, s), TypeError, "key has dtype"),
        ((M0, key, value, s.double()), TypeError, "strength has dtype"),
        ((M0.long(), key, value, s), TypeError, "M0 must be a floating tensor"),
        ((M0[:, :0], key, value, s), ValueError, "M0 must not be empty"),
        ((M0, key, "value", s), TypeError, "value"),
    ]


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("fn", [mmrec_ops.memory_update, torch.ops.mmrec.memory_update,
                                torch.ops.mmrec.memory_update.default], ids=["mmrec_ops", "torch.ops", "torch.ops.default"])
def test_bad_calls_name_the_argument(backend, device, fn):
    assert_bad_calls_raise(backend, fn, _bad_calls(device))
