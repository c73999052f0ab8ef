import json

import pytest
import torch

from mmrec_model import MMRecLM

from .conftest import tiny_model

V = 97


@pytest.mark.parametrize("tie", [True, False])
def test_save_and_load_give_identical_logits(tmp_path, variant, tie):
    model = tiny_model(recurrence=variant, tie_embeddings=tie)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))                               # not the init any more
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_embeddings"] is tie
    assert (tmp_path / "model.safetensors").is_file()
    loaded = MMRecLM.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    assert (loaded.lm_head.weight is loaded.embed.weight) is tie
    ids = torch.randint(0, V, (2, 12))
    assert torch.equal(model(ids)[0], loaded(ids)[0])


def test_load_in_another_dtype(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    loaded = MMRecLM.from_pretrained(tmp_path, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in loaded.parameters())


def test_missing_checkpoint_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MMRecLM.from_pretrained(tmp_path)
