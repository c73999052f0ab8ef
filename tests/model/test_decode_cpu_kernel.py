"""The C++ CPU one-token step (kernels/cpu/decode_step.cpp through mmrec_ops.decode_step_cpu) against the torch-op
step (decode.step_tensors with kernel=False) and the model's forward pass: logits, greedy tokens and state."""
import math

import mmrec_ops
import pytest
import torch

from mmrec_model.decode import DecodeState, step
from mmrec_model.generate import prefill

from .conftest import rel_err, tiny_model

V = 97          # tiny_config vocabulary; chunk_len 8

pytestmark = pytest.mark.skipif(not mmrec_ops.has_decode_step_cpu(),
                                reason="mmrec_ops._C is not built (or predates the CPU decode step)")
TOLERANCES = [(torch.float64, 1e-10), (torch.float32, 1e-5)]


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def both_states(model, prompts):
    """Two DecodeStates prefilled from the same ragged prompts: the kernel's and the torch ops'."""
    fast, logits = prefill(model, prompts)
    slow = DecodeState(model, len(prompts), kernel=False)
    for r in range(len(prompts)):                                              # rows sit at their own positions
        slow.load(fast.export([r]), [r])
    assert fast.kernel is not None and slow.kernel is None
    return fast, slow, logits


def assert_states_close(a: DecodeState, b: DecodeState, tol: float) -> None:
    assert a.positions == b.positions and a.pos.tolist() == b.pos.tolist()
    for x, y in zip(a.mem + a.chunk_sum, b.mem + b.chunk_sum):
        assert (x - y).abs().max() <= tol * max(1.0, float(y.abs().max()))


@pytest.mark.parametrize("dtype, tol", TOLERANCES)
@pytest.mark.parametrize("lengths", [[5], [3, 8, 13], [2, 3, 5, 7, 8, 9]])
def test_kernel_step_equals_torch_step(variant, dtype, tol, lengths):
    """B = 1, 3 and 6 rows (the GEMV passes over 4 rows at a time) at ragged positions, 20 fed tokens: every row
    crosses chunk boundaries (slot updates) on different steps; logits and the whole state match the torch-op
    step."""
    model = tiny_model(recurrence=variant, dtype=dtype)
    streams = [torch.randint(0, V, (L + 20,)) for L in lengths]
    fast, slow, _ = both_states(model, [s[:L] for s, L in zip(streams, lengths)])
    for t in range(20):
        token = torch.stack([s[L + t] for s, L in zip(streams, lengths)])
        got, want = step(fast, token), step(slow, token)
        assert got.dtype == dtype and got.shape == (len(lengths), V)
        assert not torch.isnan(got).any()
        assert rel_err(got, want) < tol
        assert_states_close(fast, slow, tol)


@pytest.mark.parametrize("dtype, tol", TOLERANCES)
def test_kernel_step_equals_forward(variant, dtype, tol):
    """Rows prefilled from prompts of lengths 3, 8 and 13, then stepped 20 tokens: each row's logits equal one
    forward pass over its whole stream."""
    model = tiny_model(recurrence=variant, dtype=dtype)
    lengths = [3, 8, 13]
    streams = [torch.randint(0, V, (L + 20,)) for L in lengths]
    ds, _ = prefill(model, [s[:L] for s, L in zip(streams, lengths)])
    assert ds.kernel is not None
    got = torch.stack([step(ds, torch.stack([s[L + t] for s, L in zip(streams, lengths)])) for t in range(20)], 1)
    for r, (s, L) in enumerate(zip(streams, lengths)):
        full, _ = model(s[None])                                               # [1, L + 20, V]
        assert rel_err(got[r], full[0, L:]) < tol


@pytest.mark.parametrize("B", [1, 3])
def test_greedy_tokens_equal_the_torch_step(variant, B):
    """40 greedy tokens (5 chunks of 8) fed back: the kernel and the torch ops pick the same tokens."""
    model = tiny_model(seed=3, recurrence=variant)
    prompts = [torch.randint(0, V, (n,)) for n in (4, 7, 11)[:B]]
    fast, slow, logits = both_states(model, prompts)
    tok_fast = tok_slow = logits.argmax(-1)
    for _ in range(40):
        tok_fast, tok_slow = step(fast, tok_fast).argmax(-1), step(slow, tok_slow).argmax(-1)
        assert torch.equal(tok_fast, tok_slow)


def test_kernel_writes_every_logit_and_advances_pos():
    """A NaN-filled logits buffer is fully overwritten by one call; pos advances by one per row."""
    model = tiny_model(recurrence="nonlinear")
    ds = model.decode_state(batch_size=2)
    poisoned = torch.full((2, V), math.nan)
    ds.kernel.step(torch.tensor([1, 2]), poisoned, 1)
    assert not torch.isnan(poisoned).any()
    assert ds.pos.tolist() == [1, 1]
    ref = DecodeState(model, 2, kernel=False)
    assert rel_err(poisoned, step(ref, torch.tensor([1, 2]))) < 1e-5


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_agree(threads):
    """The GEMV tiles split over any number of threads give the 1-thread logits bit for bit (each output column is
    computed by one thread in a fixed order)."""
    model = tiny_model(recurrence="linear")
    a, b = model.decode_state(batch_size=3), model.decode_state(batch_size=3)
    for t in range(10):
        tokens = torch.tensor([t, 2 * t, 3 * t]) % V
        la, lb = torch.empty(3, V), torch.empty(3, V)
        a.kernel.step(tokens, la, 1)
        b.kernel.step(tokens, lb, threads)
        assert torch.equal(la, lb)


def test_bad_input_is_refused():
    model = tiny_model()
    ds = model.decode_state(batch_size=2)
    with pytest.raises(ValueError):
        ds.kernel.step(torch.tensor([0, V]), torch.empty(2, V), 1)            # token out of range
    with pytest.raises(ValueError):
        ds.kernel.step(torch.tensor([0, 1, 2]), torch.empty(3, V), 1)         # wrong batch
    with pytest.raises(ValueError):
        ds.kernel.step(torch.tensor([0, 1]), torch.empty(2, V + 1), 1)        # wrong logits shape
    with pytest.raises(ValueError):
        DecodeState(tiny_model(dtype=torch.bfloat16), 1, kernel=True)          # no bf16 kernel
    assert DecodeState(tiny_model(dtype=torch.bfloat16), 1).kernel is None     # bf16: the torch ops
