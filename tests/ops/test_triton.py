"""Triton-specific checks beyond the contract suite: low-precision I/O (the contract runs bfloat16/float16 only on
GPUs), shapes that span several tiles of each kernel (chained T tiles, D tiles, batch tiles, padded heads and
slots), clamped mdi decays, and the recurrence head-size limit. On a CPU these run under TRITON_INTERPRET=1
(tests/conftest.py), so shapes stay small."""
from __future__ import annotations

import pytest
import torch

import mmrec_ops
from mmrec_ops import dispatch, reference

from .common import assert_close, grads, spec_grads, tol_for

if not dispatch.serves("triton", "scan", "cuda" if torch.cuda.is_available() else "cpu"):
    pytest.skip(f"triton backend cannot run here: {dispatch.why_not_built('triton')}", allow_module_level=True)

from mmrec_ops.backends import triton as triton_backend  # noqa: E402  (imports triton)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _rand(gen, shape, dtype, lo=-1.0, hi=1.0):
    x = torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    return x.to(device=DEVICE, dtype=dtype).requires_grad_(True)


def _check(op: str, args, dtype, float32_tol=1e-5, grad_tol=None):
    """Forward and every input gradient on `triton` (the backward runs the forward's backend) against the float64
    reference's forward and SPEC.md's gradients."""
    tensors = [x for x in args if isinstance(x, torch.Tensor)]
    with dispatch.backend("triton"):
        out = getattr(mmrec_ops, op)(*args)
    got = grads(out, tensors)
    ref = getattr(reference, op)(*(x.detach().double() if isinstance(x, torch.Tensor) else x for x in args))
    want = spec_grads(op, args, out.shape)
    assert out.dtype == dtype
    assert_close(out, ref, tol_for(dtype, float32_tol), f"{op} {dtype} forward")
    gtol = grad_tol if grad_tol is not None else (1e-4 if dtype == torch.float32 else tol_for(dtype, 1e-4) * 2)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g is not None and g.dtype == dtype, f"{op}: input {i} got no gradient of dtype {dtype}"
        assert_close(g, w, gtol, f"{op} {dtype} d(input {i})")


LOW = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_io(dtype):
    gen = torch.Generator().manual_seed(0)
    B, T, D, H, N, S = 2, 6, 6, 2, 3, 3
    _check("scan", (_rand(gen, (B, T, D), dtype, 0.5, 1.0), _rand(gen, (B, T, D), dtype), _rand(gen, (B, D), dtype),
                    False), dtype)
    _check("recurrence", (_rand(gen, (B, T, D), dtype), _rand(gen, (B, T, D), dtype, 0.5, 1.0),
                          _rand(gen, (H, D // H, D // H), dtype, -0.5, 0.5), _rand(gen, (D,), dtype, -0.3, 0.3),
                          _rand(gen, (B, D), dtype)), dtype)
    _check("mdi", (_rand(gen, (B, T, D), dtype), _rand(gen, (B, T, N), dtype, -3, 3), _rand(gen, (N, D), dtype, -2, 4),
                   _rand(gen, (B, N, D), dtype), 1e-6), dtype)
    _check("memory_update", (_rand(gen, (B, S, D), dtype), _rand(gen, (B, T, D), dtype, -2, 2),
                             _rand(gen, (B, T, D), dtype), _rand(gen, (B, T), dtype, 0, 1)), dtype)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_scan_many_tiles(reverse, with_h0):
    """T over several chained tiles (4 steps each under the interpreter), D over two channel tiles."""
    gen = torch.Generator().manual_seed(1)
    B, T, D = 2, 13 if DEVICE == "cpu" else 1000, 11 if DEVICE == "cpu" else 300
    h0 = _rand(gen, (B, D), torch.float32) if with_h0 else None
    _check("scan", (_rand(gen, (B, T, D), torch.float32, 0.5, 1.0), _rand(gen, (B, T, D), torch.float32), h0,
                    reverse), torch.float32, 1e-6)


def test_scan_cumulative_product_is_exact_where_logs_underflow():
    """prod_{i<=t} gamma_i = scan(gamma, 0, h0=1): tiny decays underflow to exact zeros, never NaN."""
    gamma = torch.full((1, 12, 3), 1e-20, dtype=torch.float32, device=DEVICE)
    gamma[:, :, 1] = 0.0
    gamma[:, :, 2] = 0.5
    with dispatch.backend("triton"):
        out = mmrec_ops.scan(gamma, torch.zeros_like(gamma), torch.ones(1, 3, device=DEVICE))
    want = torch.cumprod(gamma.double(), 1)
    assert torch.isfinite(out).all()
    assert_close(out, want, 1e-7, "cumulative product")
    assert (out[:, 3:, :2] == 0).all()


def test_recurrence_batch_tiles_and_padded_heads():
    """B = 18 spans two batch tiles of 16; d = 20 is padded to 32 (dW summed over the tiles)."""
    gen = torch.Generator().manual_seed(2)
    B, T, H, d = 18, 4, 2, 20
    D = H * d
    _check("recurrence", (_rand(gen, (B, T, D), torch.float32), _rand(gen, (B, T, D), torch.float32, 0.5, 1.0),
                          _rand(gen, (H, d, d), torch.float32, -0.3, 0.3), _rand(gen, (D,), torch.float32, -0.3, 0.3),
                          _rand(gen, (B, D), torch.float32)), torch.float32)


def test_recurrence_rejects_heads_over_128():
    z = torch.zeros(1, 2, 129, device=DEVICE)
    w = torch.zeros(1, 129, 129, device=DEVICE)
    with dispatch.backend("triton"), pytest.raises(ValueError, match="head dimensions"):
        mmrec_ops.recurrence(z, z, w)


@pytest.mark.parametrize("eps", [1e-6, 0.2])
def test_mdi_many_tiles_and_clamped_decays(eps):
    """Several chained T tiles and D tiles; eps = 0.2 clamps many decays (zero gradient there, as torch.clamp)."""
    gen = torch.Generator().manual_seed(3)
    B, T, N, D = 2, 10, 3, 11
    _check("mdi", (_rand(gen, (B, T, D), torch.float64), _rand(gen, (B, T, N), torch.float64, -3, 3),
                   _rand(gen, (N, D), torch.float64, -2, 4), _rand(gen, (B, N, D), torch.float64), eps),
           torch.float64, grad_tol=1e-10)


def test_memory_update_many_d_tiles_and_padded_slots(monkeypatch):
    """D = 11 over three tiles of 4 columns; S = 3 slots padded to 4."""
    monkeypatch.setattr(triton_backend, "MU_BLOCK_D", 4)
    gen = torch.Generator().manual_seed(4)
    B, NC, S, D = 2, 3, 3, 11
    _check("memory_update", (_rand(gen, (B, S, D), torch.float64), _rand(gen, (B, NC, D), torch.float64, -2, 2),
                             _rand(gen, (B, NC, D), torch.float64), _rand(gen, (B, NC), torch.float64, 0, 1)),
           torch.float64, grad_tol=1e-10)


def test_recurrence_backward_reloading_w(monkeypatch):
    """The backward variant that re-reads W every step (used where W and W^T do not both fit on chip)."""
    monkeypatch.setattr(triton_backend, "_fallbacks", lambda cfg, backward: [{**cfg, "RELOAD_W": True}] if backward else [cfg])
    monkeypatch.setattr(triton_backend, "_REC_VARIANT", {})
    gen = torch.Generator().manual_seed(5)
    B, T, H, d = 3, 4, 2, 3
    D = H * d
    _check("recurrence", (_rand(gen, (B, T, D), torch.float64), _rand(gen, (B, T, D), torch.float64, 0.5, 1.0),
                          _rand(gen, (H, d, d), torch.float64, -0.5, 0.5), _rand(gen, (D,), torch.float64, -0.3, 0.3),
                          _rand(gen, (B, D), torch.float64)), torch.float64, grad_tol=1e-10)


def _memory_read_case(gen, dtype, B=2, T=19, N=3, S=3, Hr=2, dh=5, C=3, k0=2):
    D, n_slots = Hr * dh, -(-(k0 + T) // C)
    return [_rand(gen, (B, T, D), dtype, -2, 2), _rand(gen, (B, T, D), dtype, -3, 3), _rand(gen, (B, T, D), dtype),
            _rand(gen, (B, T, N), dtype, -3, 3), _rand(gen, (N, D), dtype, -2, 4),
            _rand(gen, (B, n_slots, S, D), dtype), _rand(gen, (B, N, D), dtype)]


def _check_memory_read(xs, cfg, dtype, tol, grad_tol):
    """r, m_last and the seven gradients (through both outputs) against autograd of the float64 reference."""
    with dispatch.backend("triton"):
        r, m_last = mmrec_ops.memory_read(*xs, *cfg)
    gen = torch.Generator().manual_seed(9)
    gr = torch.randn(r.shape, generator=gen, dtype=torch.float64).to(DEVICE)
    gm = torch.randn(m_last.shape, generator=gen, dtype=torch.float64).to(DEVICE)
    got = torch.autograd.grad((r, m_last), xs, (gr.to(dtype), gm.to(dtype)))
    ys = [x.detach().double().requires_grad_(True) for x in xs]
    want_r, want_m = reference.memory_read(*ys, *cfg)
    want = torch.autograd.grad((want_r, want_m), ys, (gr, gm))
    assert r.dtype == dtype and m_last.dtype == dtype
    assert_close(r, want_r, tol, f"memory_read {dtype} r")
    assert_close(m_last, want_m, tol, f"memory_read {dtype} m_last")
    for name, g, w in zip(("q", "h", "v", "mod", "base", "Ms", "m0"), got, want):
        assert g.dtype == dtype
        assert_close(g, w, grad_tol, f"memory_read {dtype} d{name}")


@pytest.mark.parametrize("block_l", [16, 32])
@pytest.mark.parametrize("C,k0,eps", [(1, 0, 1e-6), (3, 2, 0.2), (16, 5, 1e-6), (32, 16, 1e-6)])
def test_memory_read_time_chunks(monkeypatch, block_l, C, k0, eps):
    """Time chunks of 16 and 32 tokens (T = 40: a partial last chunk) against slot chunks of 1, 3, 16 and 32 tokens
    (one time chunk reads up to 32 slot chunks, or exactly one whole one at C = 32, k0 = 16 with 16-token chunks);
    eps = 0.2 clamps many decays."""
    monkeypatch.setattr(triton_backend, "MR_CHUNK", block_l)
    monkeypatch.setattr(triton_backend, "MR_CHUNK_INTERPRET", block_l)
    monkeypatch.setattr(triton_backend, "MR_BWD_INTERPRET", block_l)
    gen = torch.Generator().manual_seed(block_l * 100 + C)
    xs = _memory_read_case(gen, torch.float64, T=40, C=C, k0=k0)
    _check_memory_read(xs, (k0, C, 2, eps, 1e-6), torch.float64, 1e-12, 1e-10)


@pytest.mark.parametrize("block_n,block_dh,acc_bytes,tiles", [(4, 64, 4, (32, 4)), (1, 16, 4, (32, 4)),
                                                              (4, 128, 4, (16, 4)), (8, 128, 4, (16, 8)),
                                                              (16, 128, 4, (16, 8)), (4, 64, 8, (16, 4)),
                                                              (8, 64, 8, (16, 8))])
def test_memory_read_backward_tiles_keep_the_bank_tile_per_thread(monkeypatch, block_n, block_dh, acc_bytes, tiles):
    """The backward's (tokens, warps) from (32, 4): 32 x 4 x 64 float32 banks over 128 threads is 256 bytes per
    thread; a larger N or dh, or float64, takes 16 tokens, then 8 warps; past that (16 x 16 x 128 over 256 threads:
    512 bytes) nothing is left."""
    monkeypatch.setattr(triton_backend, "MR_BWD", (32, 4))
    assert triton_backend._mr_bwd_tiles(block_n, block_dh, acc_bytes) == tiles


@pytest.mark.parametrize("dtype", LOW)
def test_memory_read_low_precision_io(dtype):
    gen = torch.Generator().manual_seed(6)
    xs = _memory_read_case(gen, dtype)
    _check_memory_read(xs, (2, 3, 2, 1e-6, 1e-6), dtype, tol_for(dtype, 1e-6), 2 * tol_for(dtype, 1e-4))


def test_sliced_inputs_are_read_in_place():
    """The in-projection's column views and a slot tensor's leading chunks reach the kernels without a copy (with
    their strides); layouts the kernels cannot index are copied."""
    rows = torch.zeros(2, 5, 3 * 8 + 4, device=DEVICE)                                  # [B, T, 3D + N]
    q, mod = rows[..., 8:16], rows[..., 24:]
    for view, stride in ((q, 28), (mod, 28), (rows[:1, :1, 8:16], 8), (rows[:, :1, 8:16], 5 * 28)):
        got, got_stride = triton_backend._rows(view)
        assert got.data_ptr() == view.data_ptr() and got_stride == stride
    for view in (rows.transpose(0, 1)[..., 8:16], rows[:, ::2, 8:16], rows[..., 8:16:2]):
        got, got_stride = triton_backend._rows(view)
        assert got.is_contiguous() and got_stride == view.shape[-1] and torch.equal(got, view)
    slots = torch.zeros(2, 4, 3, 8, device=DEVICE)
    got, batch_stride = triton_backend._batch_rows(slots[:, :3])
    assert got.data_ptr() == slots.data_ptr() and batch_stride == 4 * 3 * 8
    got, batch_stride = triton_backend._batch_rows(slots[..., :4])
    assert got.is_contiguous() and batch_stride == 4 * 3 * 4
    one = torch.zeros(1, 8, 3, device=DEVICE).transpose(1, 2)                           # one batch row, not contiguous
    got, batch_stride = triton_backend._batch_rows(one)
    assert got.is_contiguous() and batch_stride == 24 and torch.equal(got, one)
