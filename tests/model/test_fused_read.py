"""The block's fused read (mmrec_ops.memory_read) gives the logits, state and gradients of the unfused path it
replaced: the bank tensor from mmrec_ops.mdi, then the read over {h_t, m_t^1..N, Ms[:, c(t)]} written out here."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mmrec_ops

from .conftest import rel_err, tiny_model


def _rms(x, eps):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(acc)
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def unfused_memory_read(q, h, v, mod, base, Ms, m0=None, k0=0, chunk_len=1, n_heads=1, eps=1e-6, norm_eps=1e-6):
    """mdi materialising [B, T, N, D], then the read with per-kind einsums on chunk-padded tensors."""
    m = mmrec_ops.mdi(v, mod, base, m0, eps)                                 # [B, T, N, D]
    B, T, D = q.shape
    N, L, S, C, Hr = base.shape[0], Ms.shape[1], Ms.shape[2], chunk_len, n_heads
    dh = D // Hr

    def to_chunks(x):
        return F.pad(x, (0, 0) * (x.dim() - 2) + (k0, L * C - k0 - T)).view(B, L, C, *x.shape[2:])

    def from_chunks(x):
        return x.reshape(B, L * C, *x.shape[3:])[:, k0:k0 + T]

    qh, nh = q.view(B, T, Hr, dh), _rms(h.view(B, T, Hr, dh), norm_eps)
    nm, nM = _rms(m.view(B, T, N, Hr, dh), norm_eps), _rms(Ms.reshape(B, L, S, Hr, dh), norm_eps)
    score = torch.cat([(qh * nh).sum(-1, keepdim=True), torch.einsum("bthd,btnhd->bthn", qh, nm),
                       from_chunks(torch.einsum("blchd,blshd->blchs", to_chunks(qh), nM))], -1)
    w_h, w_m, w_M = torch.softmax(score / math.sqrt(dh), -1).split([1, N, S], -1)
    r = w_h * nh + torch.einsum("bthn,btnhd->bthd", w_m, nm)
    r = r + from_chunks(torch.einsum("blchs,blshd->blchd", to_chunks(w_M), nM))
    return r.reshape(B, T, D), m[:, -1]


def _run_segments(model, ids, splits):
    state, logits = None, []
    for a, b in zip((0,) + splits, splits + (ids.shape[1],)):
        out, state = model(ids[:, a:b], state)
        logits.append(out)
    return torch.cat(logits, 1), state


@pytest.mark.parametrize("variant", ["nonlinear", "linear"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("splits", [(), (5,), (3, 11, 12)])
def test_fused_read_equals_unfused_path(monkeypatch, variant, dtype, tol, splits):
    model = tiny_model(seed=1, dtype=dtype, recurrence=variant).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 21), generator=torch.Generator().manual_seed(2))
    fused, fused_state = _run_segments(model, ids, splits)
    loss = fused.double().pow(2).mean()
    fused_grads = torch.autograd.grad(loss, list(model.parameters()))
    monkeypatch.setattr(mmrec_ops, "memory_read", unfused_memory_read)
    unfused, unfused_state = _run_segments(model, ids, splits)
    unfused_grads = torch.autograd.grad(unfused.double().pow(2).mean(), list(model.parameters()))
    assert rel_err(fused, unfused) < tol
    for a, b in zip(fused_state.layers, unfused_state.layers):
        assert rel_err(a.m, b.m) < tol
    for (name, _), g, w in zip(model.named_parameters(), fused_grads, unfused_grads):
        assert rel_err(g, w) < (tol if dtype == torch.float64 else 1e-4), name


@pytest.mark.parametrize("k0, T", [(0, 5), (3, 13)])
def test_block_unfused_read_equals_the_oracle(k0, T):
    """MMRecBlock._read (the path CUDA tensors take with model.CUDA_READ = "unfused") is the same read."""
    torch.manual_seed(0)
    block = tiny_model().blocks[0].double()
    cfg = block.config
    B, D, N, S, C = 2, cfg.d_model, cfg.n_banks, cfg.n_slots, cfg.chunk_len
    L = -(-(k0 + T) // C)
    q, h, v = (torch.randn(B, T, D, dtype=torch.float64) for _ in range(3))
    mod, Ms = torch.randn(B, T, N, dtype=torch.float64), torch.randn(B, L, S, D, dtype=torch.float64)
    m = mmrec_ops.mdi(v, mod, block.base, None, cfg.mdi_eps)
    got = block._read(q, h, m, Ms, k0)
    want, _ = unfused_memory_read(q, h, v, mod, block.base, Ms, None, k0, C, cfg.n_read_heads, cfg.mdi_eps,
                                  cfg.norm_eps)
    assert rel_err(got, want) < 1e-12


def test_cuda_read_setting(monkeypatch):
    """CUDA_READ picks the read on CUDA tensors; a wrong value is refused by name."""
    import mmrec_model.model as model_module
    for value, unfused in (("fused", False), ("unfused", True)):
        monkeypatch.setattr(model_module, "CUDA_READ", value)
        assert model_module._unfused_read_on_cuda() is unfused
    monkeypatch.setattr(model_module, "CUDA_READ", "fast")
    with pytest.raises(ValueError, match="CUDA_READ"):
        model_module._unfused_read_on_cuda()
