"""Atomic checkpoints: what a crash can leave behind, and RNG round trips."""
import random

import numpy as np
import pytest
import torch

from mmrec_model import MMRecConfig, MMRecLM
from mmrec_model.checkpoint import (latest_checkpoint, list_checkpoints, load_trainer_state, rng_state,
                                    save_checkpoint, set_rng_state)
from mmrec_model.tokenizer import Tokenizer
from mmrec_model.training.config import StageConfig
from mmrec_model.training.schedule import lr_at, stage_steps


@pytest.fixture(scope="module")
def parts():
    tok = Tokenizer.train(["hello world, hello there. " * 50], vocab_size=300)
    model = MMRecLM(MMRecConfig.preset("tiny", vocab_size=tok.vocab_size))
    return model, tok


def test_save_keep_and_latest(parts, tmp_path):
    model, tok = parts
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, tok, {"step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000002", "ckpt-00000003"]
    assert latest_checkpoint(tmp_path).name == "ckpt-00000003"
    assert load_trainer_state(latest_checkpoint(tmp_path))["step"] == 3
    again = MMRecLM.from_pretrained(latest_checkpoint(tmp_path))
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_crash_leftovers_are_ignored(parts, tmp_path):
    model, tok = parts
    save_checkpoint(tmp_path, 5, model, tok, {"step": 5})
    # a save killed halfway: a temporary directory, and a renamed directory without meta.json
    (tmp_path / ".ckpt-00000006.tmp-99999").mkdir()
    (tmp_path / ".ckpt-00000006.tmp-99999" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / "ckpt-00000007").mkdir()
    assert latest_checkpoint(tmp_path).name == "ckpt-00000005"
    (tmp_path / "LATEST").write_text("ckpt-00000009\n")          # stale pointer
    assert latest_checkpoint(tmp_path).name == "ckpt-00000005"
    (tmp_path / "LATEST").unlink()
    assert latest_checkpoint(tmp_path).name == "ckpt-00000005"
    save_checkpoint(tmp_path, 8, model, tok, {"step": 8})
    assert not (tmp_path / ".ckpt-00000006.tmp-99999").exists()   # cleaned up by the next save
    save_checkpoint(tmp_path, 8, model, tok, {"step": 8, "again": True})   # re-save of the same step
    assert load_trainer_state(latest_checkpoint(tmp_path))["again"] is True
    assert latest_checkpoint(tmp_path / "missing") is None


def test_rng_state_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_warmup_cosine_schedule():
    cfg = StageConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg, 20) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert lr_at(20, cfg, 20) == pytest.approx(0.1) and lr_at(12, cfg, 20) == pytest.approx(0.55)


def test_token_budget_caps_steps():
    assert stage_steps(StageConfig(max_steps=100, batch_size=4, seq_len=32, max_tokens=1000)) == 8
    assert stage_steps(StageConfig(max_steps=5, batch_size=4, seq_len=32, max_tokens=10**6)) == 5
