import pytest
import torch

from .conftest import rel_err, tiny_model

V = 97


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_generation_logits_equal_full_forward(variant, dtype, tol):
    model = tiny_model(recurrence=variant, dtype=dtype)
    prompt = torch.randint(0, V, (2, 11))
    out, logits = model.generate(prompt, 14, temperature=0.0, return_logits=True)
    assert out.shape == (2, 25) and logits.shape == (2, 14, V)
    assert torch.equal(out[:, :11], prompt)
    full, _ = model(out[:, :-1])
    assert rel_err(logits, full[:, 10:].float()) < tol
    assert torch.equal(out[:, 11:], full[:, 10:].argmax(-1))


def test_sampling_is_seeded_and_reproducible(variant):
    model = tiny_model(recurrence=variant)
    prompt = torch.randint(0, V, (2, 5))
    a = model.generate(prompt, 12, temperature=1.0, seed=123)
    b = model.generate(prompt, 12, temperature=1.0, seed=123)
    c = model.generate(prompt, 12, temperature=1.0, seed=124)
    d = model.generate(prompt, 12, temperature=1.0, generator=torch.Generator().manual_seed(123))
    assert torch.equal(a, b) and torch.equal(a, d)
    assert not torch.equal(a, c)


def test_top_k_and_top_p_restrict_the_choice():
    model = tiny_model()
    prompt = torch.randint(0, V, (3, 4))
    greedy = model.generate(prompt, 6, temperature=0.0)
    assert torch.equal(model.generate(prompt, 6, temperature=1.0, top_k=1, seed=0), greedy)
    assert torch.equal(model.generate(prompt, 6, temperature=1.0, top_p=1e-9, seed=0), greedy)
    out, logits = model.generate(prompt, 8, temperature=5.0, top_k=3, seed=0, return_logits=True)
    allowed = logits.topk(3, dim=-1).indices                                 # [B, n, 3]
    assert (allowed == out[:, 4:, None]).any(-1).all()


def test_one_dimensional_prompt_and_zero_tokens():
    model = tiny_model()
    prompt = torch.randint(0, V, (7,))
    out = model.generate(prompt, 3, temperature=0.0)
    assert out.shape == (10,) and torch.equal(out[:7], prompt)
    assert torch.equal(model.generate(prompt, 0), prompt)


def test_eos_stops_and_pads():
    model = tiny_model()
    prompt = torch.randint(0, V, (1, 6))
    greedy = model.generate(prompt, 5, temperature=0.0)
    eos = int(greedy[0, 7])                                                  # the second generated token
    stop = 6 + int((greedy[0, 6:] == eos).nonzero()[0])                      # its first appearance
    out = model.generate(prompt, 5, temperature=0.0, eos=eos)
    assert torch.equal(out, greedy[:, :stop + 1])
    batch = torch.cat([prompt, torch.randint(0, V, (1, 6))])
    out = model.generate(batch, 5, temperature=0.0, eos=eos)
    assert torch.equal(out[:1, :stop + 1], greedy[:, :stop + 1])
    assert (out[0, stop:] == eos).all()                                      # padded with eos after it


def test_generation_continues_from_a_state():
    model = tiny_model(dtype=torch.float64)
    ids = torch.randint(0, V, (1, 13))
    _, state = model(ids[:, :9])
    out = model.generate(ids[:, 9:], 4, temperature=0.0, state=state)
    assert torch.equal(out, model.generate(ids, 4, temperature=0.0)[:, 9:])


def test_generation_state_does_not_grow():
    """Each new token is one step on preallocated buffers: the state tensors neither move nor change shape."""
    model = tiny_model()
    ds = model.decode_state(batch_size=2)
    before = [(t.data_ptr(), tuple(t.shape)) for t in ds.mem + ds.chunk_sum]
    token = torch.randint(0, V, (2,))
    for _ in range(20):                                                      # 2.5 chunks of 8
        token = model.step(token, ds).argmax(-1)
    assert [(t.data_ptr(), tuple(t.shape)) for t in ds.mem + ds.chunk_sum] == before
    assert ds.positions == [20, 20]


@pytest.mark.parametrize("kwargs, word", [
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(max_new_tokens=2, temperature=-1.0), "temperature"),
    (dict(max_new_tokens=2, top_k=0), "top_k"),
    (dict(max_new_tokens=2, top_p=0.0), "top_p"),
    (dict(max_new_tokens=2, seed=1, generator=torch.Generator()), "generator"),
])
def test_bad_generation_arguments_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        tiny_model().generate(torch.zeros(1, 3, dtype=torch.long), **kwargs)


def test_generation_ignores_dropout_and_restores_the_mode():
    model = tiny_model(dropout=0.5).train()
    prompt = torch.randint(0, V, (2, 6))
    out, logits = model.generate(prompt, 4, temperature=0.0, return_logits=True)
    assert model.training
    model.eval()
    full, _ = model(out[:, :-1])
    assert rel_err(logits, full[:, 5:]) < 1e-5
