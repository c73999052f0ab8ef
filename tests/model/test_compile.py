"""The model compiles as one graph (no graph breaks), with the same logits as eager."""
import pytest
import torch

from mmrec_model import MMRecConfig, MMRecLM


@pytest.mark.parametrize("recurrence", ["nonlinear", "linear"])
def test_model_compiles_fullgraph(recurrence):
    torch.manual_seed(0)
    model = MMRecLM(MMRecConfig.preset("tiny", recurrence=recurrence)).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 19))
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        eager_logits, _ = model(ids)
        logits, _ = compiled(ids)
    torch.testing.assert_close(logits, eager_logits, rtol=1e-5, atol=1e-5)


def test_segments_compile_once_across_positions():
    """Truncated BPTT hands the model states at positions 0, 12, 24, ...: torch.compile traces the changing
    position as a SymInt (k0 = position % chunk_len reaches memory_read symbolic) after the first recompile. The
    compiled segments (forward and backward) must equal eager ones, and compilation must stop: a graph for the first
    segment, one for a static position, then one per branch of the chunk bookkeeping (k0 = 0 or 4 here), none per
    position after that."""
    from torch._dynamo.testing import CompileCounterWithBackend
    torch.manual_seed(0)
    model = MMRecLM(MMRecConfig.preset("tiny"))
    ids = torch.randint(0, model.config.vocab_size, (2, 96))
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    state_eager = state_compiled = None
    frames = []
    for segment in ids.split(12, dim=1):  # positions 0, 12, 24, ..., 84: k0 = 0, 4, 0, 4, ... at chunk_len 8
        eager_logits, state_eager = model(segment, state_eager)
        logits, state_compiled = compiled(segment, state_compiled)
        torch.testing.assert_close(logits, eager_logits, rtol=1e-5, atol=1e-5)
        eager_grads = torch.autograd.grad(eager_logits.square().mean(), [block.in_proj.weight for block in model.blocks])
        grads = torch.autograd.grad(logits.square().mean(), [block.in_proj.weight for block in model.blocks])
        torch.testing.assert_close(grads, eager_grads, rtol=1e-4, atol=1e-6)
        state_eager, state_compiled = state_eager.detach(), state_compiled.detach()
        frames.append(counter.frame_count)
    assert state_compiled.position == 96
    assert frames[4:] == [frames[4]] * 4, f"compilations after each segment: {frames}"
