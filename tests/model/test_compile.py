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
