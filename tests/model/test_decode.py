"""The one-token step (decode.py) and the generation built on it, against the plain forward path:
model(ids[:, None], state) one token at a time, or one forward call over the whole stream."""
import functools

import pytest
import torch

from mmrec_model.generate import TextStream, continue_stream, sample

from .conftest import rel_err, tiny_model

V = 97          # tiny_config vocabulary; chunk_len 8


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def assert_states_close(got, ref, tol):
    """Every layer's h, banks, slots and chunk sum of two MMRecStates, relative to max(1, max|ref|)."""
    for a, b in zip(got.layers, ref.layers):
        for x, y in zip((a.h, a.m, a.slots, a.chunk_sum), (b.h, b.m, b.slots, b.chunk_sum)):
            assert (x - y).abs().max() <= tol * max(1.0, float(y.abs().max()))


def eager_generate(model, prompt, n, temperature=0.0, top_k=None, top_p=None, generator=None, eos=()):
    """The plain eager loop: prefill with one forward call, then model(token[:, None], state) per token."""
    logits, state = model(prompt, None, last_only=True)
    out = []
    for _ in range(n):
        token = sample(logits[:, -1], temperature, top_k, top_p, generator)
        out.append(token)
        if eos and all(int(t) in eos for t in token):
            break
        logits, state = model(token[:, None], state)
    return torch.stack(out, 1)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("start", [0, 5])
def test_step_equals_forward_across_chunks(variant, dtype, tol, start):
    model = tiny_model(recurrence=variant, dtype=dtype)
    ids = torch.randint(0, V, (3, start + 19))                               # crosses 2 chunk boundaries
    full, _ = model(ids)                                                     # [B, T, V]
    state = None
    if start:
        _, state = model(ids[:, :start])
    ds = model.decode_state(state, batch_size=3)
    steps, eager = [], []
    for t in range(start, ids.shape[1]):
        steps.append(model.step(ids[:, t], ds))
        logits, state = model(ids[:, t:t + 1], state)
        eager.append(logits[:, 0])
    steps, eager = torch.stack(steps, 1), torch.stack(eager, 1)
    assert steps.dtype == dtype
    assert rel_err(steps, eager) < tol
    assert rel_err(steps, full[:, start:]) < tol
    exported = ds.export()
    assert exported.position == state.position
    assert_states_close(exported, state, tol)


def test_rows_at_different_positions(variant):
    """Rows prefilled from prompts of different lengths complete their chunks on different steps."""
    model = tiny_model(recurrence=variant, dtype=torch.float64)
    lengths = [3, 8, 13]
    streams = [torch.randint(0, V, (L + 20,)) for L in lengths]
    from mmrec_model.generate import prefill
    ds, _ = prefill(model, [s[:L] for s, L in zip(streams, lengths)])
    assert ds.positions == lengths
    got = torch.stack([model.step(torch.stack([s[L + t] for s, L in zip(streams, lengths)]), ds)
                       for t in range(20)], 1)                                # [3, 20, V]
    for r, (s, L) in enumerate(zip(streams, lengths)):
        full, _ = model(s[None])
        assert rel_err(got[r], full[0, L:]) < 1e-10


def test_ragged_generate_equals_each_row_alone(variant):
    model = tiny_model(recurrence=variant)
    prompts = [torch.randint(0, V, (L,)).tolist() for L in (4, 9, 4, 17)]
    out = model.generate(prompts, 12, temperature=0.0)
    assert isinstance(out, list) and len(out) == 4
    for p, row in zip(prompts, out):
        ref = eager_generate(model, torch.tensor([p]), 12)[0]
        assert row[:len(p)].tolist() == p
        assert torch.equal(row[len(p):], ref)


def test_sampled_tokens_equal_the_eager_loop(variant):
    model = tiny_model(recurrence=variant)
    prompt = torch.randint(0, V, (3, 6))
    for kwargs in (dict(temperature=1.0), dict(temperature=0.8, top_k=5), dict(temperature=1.2, top_p=0.9)):
        got = model.generate(prompt, 20, seed=7, **kwargs)[:, 6:]
        ref = eager_generate(model, prompt, 20, generator=torch.Generator().manual_seed(7), **kwargs)
        assert torch.equal(got, ref), kwargs


def test_per_row_eos_stop_strings_and_streaming():
    model = tiny_model()
    prompts = [torch.randint(0, V, (L,)).tolist() for L in (5, 7)]
    free = [eager_generate(model, torch.tensor([p]), 15)[0].tolist() for p in prompts]
    eos = free[0][3]                                                         # row 0 meets it by its 4th token
    decode = lambda ids: " ".join(f"<{i}>" for i in ids)                     # noqa: E731
    stop = f"<{free[1][5]}>"                                                 # row 1's 6th token as a stop string
    seen = []
    out = model.generate(prompts, 15, temperature=0.0, eos=eos, stop_strings=[stop], decode=decode,
                         on_token=lambda r, t: seen.append((r, t)))
    for r, (p, ref) in enumerate(zip(prompts, free)):
        cut = min([i for i, t in enumerate(ref) if t == eos or (r == 1 and f"<{t}>" == stop)] + [len(ref) - 1])
        assert out[r][len(p):].tolist() == ref[:cut + 1]
        assert [t for rr, t in seen if rr == r] == [t for t in ref[:cut + 1] if t != eos]


def test_continue_stream_equals_the_eager_loop():
    model = tiny_model(dtype=torch.float64)
    prompt = torch.randint(0, V, (11,)).tolist()
    streamed = []
    tokens, state = continue_stream(model, prompt, None, 14, temperature=0.9, top_k=20, top_p=0.95,
                                    generator=torch.Generator().manual_seed(3), on_token=streamed.append)
    ref = eager_generate(model, torch.tensor([prompt]), 14, 0.9, 20, 0.95, torch.Generator().manual_seed(3))
    assert tokens == ref[0].tolist() and streamed == tokens
    _, full_state = model(torch.tensor([prompt + tokens]))                  # every reply token is fed back
    assert state.position == full_state.position
    assert rel_err(state.layers[-1].slots, full_state.layers[-1].slots) < 1e-10
    assert rel_err(state.layers[0].h, full_state.layers[0].h) < 1e-10
    stop = tokens[4]
    cut, _ = continue_stream(model, prompt, None, 14, stop=(stop,), temperature=0.9, top_k=20, top_p=0.95,
                             generator=torch.Generator().manual_seed(3))
    assert cut == tokens[:tokens.index(stop) + 1]


def test_bad_input_is_refused():
    model = tiny_model()
    ds = model.decode_state(batch_size=2)
    with pytest.raises(ValueError, match=r"\[0, 97\)"):
        model.step(torch.tensor([1, 97]), ds)
    with pytest.raises(ValueError, match="token_ids"):
        model.step(torch.tensor([1, 2, 3]), ds)
    with pytest.raises(TypeError, match="DecodeState"):
        model.step(torch.tensor([1, 2]), None)
    with pytest.raises(ValueError, match=r"\[0, 97\)"):
        model.generate([[1, 2], [3, 200, 4]], 3)
    with pytest.raises(ValueError, match="decode"):
        model.generate([[1, 2], [3]], 3, stop_strings=["x"])
    with pytest.raises(ValueError, match="empty"):
        continue_stream(model, [], None, 3)


def test_compiled_step_equals_the_eager_step():
    """The step the compiled CUDA graph captures (decode_cuda.GraphDecoder(compiled=True)), compiled in one graph
    (fullgraph: no breaks), gives the eager step's logits and state, with and without the slot update."""
    from mmrec_model.decode import DecodeState, completion_mask, step_tensors
    model = tiny_model(recurrence="nonlinear", n_layers=1)
    compiled = torch.compile(functools.partial(step_tensors, for_compile=True), fullgraph=True, dynamic=False)
    # the torch-op step (on CPU the default is one C++ call per token, which a CUDA graph never sees)
    ds_eager, ds_comp = DecodeState(model, 2, kernel=False), DecodeState(model, 2, kernel=False)
    ids = torch.randint(0, V, (2, 10))
    for t in range(10):                                                      # chunk_len 8: token 7 updates slots
        ref = step_tensors(ds_eager, ids[:, t], completion_mask(ds_eager))
        got = compiled(ds_comp, ids[:, t], completion_mask(ds_comp))
        assert rel_err(got, ref) < 1e-5
    for a, b in zip(ds_comp.mem + ds_comp.chunk_sum, ds_eager.mem + ds_eager.chunk_sum):
        assert rel_err(a, b) < 1e-5
    assert torch.equal(ds_comp.pos, ds_eager.pos)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_for_compile_step_equals_the_forward(variant, dtype, tol):
    """The step's for_compile form (elementwise sums for torch.compile), run eagerly, against the model's forward
    over the whole stream: logits across two chunk boundaries with rows at different positions, and the state."""
    from mmrec_model.decode import DecodeState, completion_mask, step_tensors
    model = tiny_model(recurrence=variant, dtype=dtype)
    ids = torch.randint(0, V, (2, 21))
    full, _ = model(ids)                                                     # [B, T, V]
    _, state = model(ids[:1, :3])
    ds = DecodeState(model, 2, kernel=False)
    ds.load(state, rows=[0])                                                 # row 0 at position 3, row 1 at 0
    got = []
    for t in range(18):
        tokens = torch.stack([ids[0, 3 + t], ids[1, t]])
        got.append(step_tensors(ds, tokens, completion_mask(ds), for_compile=True))
        ds.positions = [p + 1 for p in ds.positions]
    got = torch.stack(got, 1)                                                # [2, 18, V]
    assert rel_err(got[0], full[0, 3:]) < tol
    assert rel_err(got[1], full[1, :18]) < tol
    _, ref_state = model(ids[1:, :18])
    exported = ds.export(rows=[1])
    assert_states_close(exported, ref_state, tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("kwargs", [dict(temperature=0.0), dict(temperature=1.0, top_k=20, top_p=0.9)])
@pytest.mark.parametrize("graph_kind", [True, "compiled"])
def test_cuda_graph_decode_equals_eager_decode(variant, kwargs, graph_kind):
    model = tiny_model(recurrence=variant).cuda()
    prompts = [torch.randint(0, V, (L,)).tolist() for L in (3, 8, 21)]       # three chunk phases
    graph = model.generate(prompts, 40, seed=5, cuda_graph=graph_kind, **kwargs)
    eager = model.generate(prompts, 40, seed=5, cuda_graph=False, **kwargs)
    for g, e in zip(graph, eager):
        assert torch.equal(g, e)
    tokens, state = continue_stream(model, prompts[1], None, 20, generator=torch.Generator("cuda").manual_seed(1),
                                    cuda_graph=True, **{k: kwargs.get(k) for k in ("temperature", "top_k", "top_p")})
    ref, ref_state = continue_stream(model, prompts[1], None, 20, generator=torch.Generator("cuda").manual_seed(1),
                                     cuda_graph=False, **{k: kwargs.get(k) for k in ("temperature", "top_k", "top_p")})
    assert tokens == ref and state.position == ref_state.position


def test_step_follows_weights_changed_in_place():
    """The step's cached weight layouts are rebuilt when a parameter changes (an optimizer step, a load)."""
    model = tiny_model(dtype=torch.float64)
    ids = torch.randint(0, V, (2, 3))
    model.decode_state(batch_size=2)                                         # builds the cached layouts
    for p in model.parameters():
        p.mul_(1.1)
    ds = model.decode_state(batch_size=2)
    got = torch.stack([model.step(ids[:, t], ds) for t in range(3)], 1)
    full, _ = model(ids)
    assert rel_err(got, full) < 1e-10
