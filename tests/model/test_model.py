import math

import pytest
import torch
import torch.nn.functional as F

from mmrec_model import MMRecConfig, MMRecLM, MMRecState

from .conftest import rel_err, tiny_model

V = 97


def test_shapes_and_state(variant):
    model = tiny_model(recurrence=variant)
    cfg = model.config
    ids = torch.randint(0, V, (3, 13))
    logits, state = model(ids)
    assert logits.shape == (3, 13, V)
    assert isinstance(state, MMRecState) and state.position == 13 and len(state.layers) == cfg.n_layers
    layer = state.layers[0]
    assert layer.h.shape == (3, cfg.d_model)
    assert layer.m.shape == (3, cfg.n_banks, cfg.d_model)
    assert layer.slots.shape == (3, cfg.n_slots, cfg.d_model)
    assert layer.chunk_sum.shape == (3, cfg.d_model)
    last, _ = model(ids, last_only=True)
    assert rel_err(last, logits[:, -1:]) < 1e-6


@pytest.mark.parametrize("t", [2, 7, 8, 13])
def test_causality_exact(variant, t):
    """Changing token t + k leaves the logits of tokens <= t bit-identical (k = 1 stays in the chunk of t
    for t = 2, 13; crosses into the next chunk for t = 7)."""
    model = tiny_model(recurrence=variant)
    torch.manual_seed(1)
    ids = torch.randint(0, V, (2, 24))
    base, _ = model(ids)
    for k in (1, 3, 24 - 1 - t):
        changed = ids.clone()
        changed[:, t + k] = (changed[:, t + k] + 1 + torch.arange(2)) % V
        logits, _ = model(changed)
        assert torch.equal(logits[:, :t + 1], base[:, :t + 1])
        assert not torch.equal(logits[:, t + k], base[:, t + k])          # the change is seen where it happens


def test_long_term_memory_carries_information_across_chunks():
    """With the recurrence and the banks forgetting at once, only the slot memory links chunks."""
    model = tiny_model(recurrence="linear", core_decay_init=1e-3, bank_decays=(1e-3, 2e-3, 3e-3), n_layers=1)
    block = model.blocks[0]
    with torch.no_grad():
        block.in_proj.bias[32:64] = -30.0                                   # gamma = sigmoid(f) ~ 1e-13
        block.in_proj.weight[32:64] = 0.0
        block.base.fill_(-30.0)                                             # bank decays clamp to mdi_eps
    torch.manual_seed(2)
    ids = torch.randint(0, V, (1, 24))
    base, _ = model(ids)
    changed = ids.clone()
    changed[:, 3] = (changed[:, 3] + 5) % V
    logits, _ = model(changed)
    assert (logits[:, 8:] - base[:, 8:]).abs().max() > 1e-4                  # later chunks see chunk 0
    assert (logits[:, 5:8] - base[:, 5:8]).abs().max() < 1e-6               # the rest of chunk 0 does not


def _segments(model, ids, bounds, state=None):
    outs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        logits, state = model(ids[:, lo:hi], state)
        outs.append(logits)
    return torch.cat(outs, 1), state


def _random_bounds(T, rng, pieces):
    cuts = sorted(rng.sample(range(1, T), pieces - 1))
    return [0] + cuts + [T]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_segments_equal_one_pass(variant, dtype, tol):
    import random
    rng = random.Random(0)
    model = tiny_model(recurrence=variant, dtype=dtype)
    T = 29
    ids = torch.randint(0, V, (2, T))
    full, full_state = model(ids)
    for pieces in (2, 4, 7):
        bounds = _random_bounds(T, rng, pieces)
        seg, state = _segments(model, ids, bounds)
        assert rel_err(seg, full) < tol, bounds
        assert state.position == T
        for a, b in zip(state.layers, full_state.layers):
            for x, y in ((a.h, b.h), (a.m, b.m), (a.slots, b.slots), (a.chunk_sum, b.chunk_sum)):
                assert rel_err(x, y) < tol or y.abs().max() == 0 and x.abs().max() <= tol
    one_by_one, _ = _segments(model, ids, list(range(T + 1)))                 # generation-style steps
    assert rel_err(one_by_one, full) < tol


def test_segments_at_chunk_boundaries(variant):
    model = tiny_model(recurrence=variant, dtype=torch.float64)
    ids = torch.randint(0, V, (2, 32))
    full, _ = model(ids)
    for bounds in ([0, 8, 16, 32], [0, 7, 9, 24, 25, 32], [0, 1, 31, 32]):
        seg, _ = _segments(model, ids, bounds)
        assert rel_err(seg, full) < 1e-12, bounds


def test_init_state_equals_no_state(variant):
    model = tiny_model(recurrence=variant)
    ids = torch.randint(0, V, (2, 11))
    a, _ = model(ids)
    b, _ = model(ids, model.init_state(2))
    assert rel_err(b, a) < 1e-6


def test_state_copy_is_detached_in_its_own_memory(variant):
    """MMRecState.copy (the trainer's carried state under CUDA graphs): equal values, no autograd history, no
    storage shared with the original."""
    model = tiny_model(recurrence=variant).train()
    _, state = model(torch.randint(0, V, (2, 5)))
    copy = state.copy()
    assert copy.position == state.position
    for s, c in zip(state.layers, copy.layers):
        for x, y in zip((s.h, s.m, s.slots, s.chunk_sum), (c.h, c.m, c.slots, c.chunk_sum)):
            assert torch.equal(x, y) and not y.requires_grad
            assert x.untyped_storage().data_ptr() != y.untyped_storage().data_ptr()


def test_state_size_is_constant(variant):
    model = tiny_model(recurrence=variant)
    sizes = []
    state = None
    for T in (3, 30):
        _, state = model(torch.randint(0, V, (1, T)), state)
        sizes.append([tuple(x.shape) for s in state.layers for x in (s.h, s.m, s.slots, s.chunk_sum)])
    assert sizes[0] == sizes[1]


def test_read_gets_q_and_v_as_views_of_aligned_rows(variant, monkeypatch):
    """The block hands q and v to memory_read as column views of one in-projection buffer of 4 D (5 D linear)
    channels per token, a multiple of 16 elements when D is (the Triton kernels read them in place, aligned), and
    the bank modulation as its own contiguous [B, T, N]."""
    import mmrec_ops
    seen = []
    fused = mmrec_ops.memory_read

    def spy(q, h, v, mod, *rest):
        seen.append((q, v, mod))
        return fused(q, h, v, mod, *rest)

    monkeypatch.setattr(mmrec_ops, "memory_read", spy)
    model = tiny_model(recurrence=variant)
    model(torch.randint(0, V, (2, 11)))
    D, N = model.config.d_model, model.config.n_banks
    width = (5 if variant == "linear" else 4) * D
    assert len(seen) == model.config.n_layers
    for q, v, mod in seen:
        assert q.shape == v.shape == (2, 11, D) and q.stride() == v.stride() == (11 * width, width, 1)
        assert v.data_ptr() - q.data_ptr() == D * q.element_size() and width % 16 == 0
        assert mod.shape == (2, 11, N) and mod.is_contiguous()


def test_every_parameter_gets_a_gradient(variant):
    model = tiny_model(recurrence=variant).train()
    ids = torch.randint(0, V, (2, 20))
    logits, _ = model(ids[:, :-1])
    F.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name


def test_truncated_bptt_with_detached_state(variant):
    model = tiny_model(recurrence=variant).train()
    ids = torch.randint(0, V, (2, 21))
    state = None
    for lo in (0, 10):
        logits, state = model(ids[:, lo:lo + 10], state)
        F.cross_entropy(logits.reshape(-1, V), ids[:, lo + 1:lo + 11].reshape(-1)).backward()
        state = state.detach()
        assert all(not x.requires_grad for s in state.layers for x in (s.h, s.m, s.slots, s.chunk_sum))
    assert model.blocks[0].M0.grad is not None


def test_initial_loss_is_near_uniform(variant):
    model = tiny_model(recurrence=variant)
    ids = torch.randint(0, V, (2, 24))
    logits, _ = model(ids[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1)).item()
    assert abs(loss - math.log(V)) < 0.1


def test_initial_decays():
    model = tiny_model(n_banks=4, bank_decays=None)
    block, cfg = model.blocks[0], model.config
    D, N = cfg.d_model, cfg.n_banks
    core = torch.sigmoid(block.in_proj.bias[D:2 * D])
    assert torch.allclose(core, torch.full_like(core, 0.9))
    c_bias = block.in_proj.bias[-N:]
    decay = torch.sigmoid(block.base) * torch.sigmoid(c_bias)[:, None]      # [N, D] at zero input
    expected = torch.tensor([1 - 1 / 4, 1 - 1 / 16, 1 - 1 / 64, 1 - 1 / 256])[:, None].expand(N, D)
    assert torch.allclose(decay, expected, atol=1e-6)


def test_bf16_autocast_cpu(variant):
    model = tiny_model(recurrence=variant)
    ids = torch.randint(0, V, (2, 16))
    ref, _ = model(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state = model(ids[:, :9])
        logits2, _ = model(ids[:, 9:], state)
    out = torch.cat([logits, logits2], 1).float()
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 5e-2


def test_bad_inputs_raise():
    model = tiny_model()
    with pytest.raises(TypeError, match="ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="ids"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="ids"):
        model(torch.zeros(1, 0, dtype=torch.long))
    _, state = model(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="batch"):
        model(torch.zeros(3, 3, dtype=torch.long), state)
    with pytest.raises(TypeError, match="state"):
        model(torch.zeros(2, 3, dtype=torch.long), {"h": 0})
    with pytest.raises(ValueError, match="batch_size"):
        model.init_state(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_autocast_segments(variant):
    model = tiny_model(recurrence=variant).cuda()
    ids = torch.randint(0, V, (2, 24), device="cuda")
    ref, _ = model(ids)
    seg, _ = _segments(model, ids, [0, 5, 13, 24])
    assert rel_err(seg, ref) < 1e-5
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _ = _segments(model, ids, [0, 5, 13, 24])
    assert rel_err(out.float(), ref) < 5e-2


def test_state_select_and_to():
    model = tiny_model(dtype=torch.float64)
    ids = torch.randint(0, V, (3, 14))
    full, _ = model(ids)
    _, state = model(ids[:, :9])
    row, _ = model(ids[1:2, 9:], state.select([1]))
    assert rel_err(row, full[1:2, 9:]) < 1e-12
    moved = state.to(torch.float32)
    assert moved.layers[0].h.dtype == torch.float32 and moved.layers[0].chunk_sum.dtype == torch.float32
    assert moved.position == state.position
