"""Fixtures of the Hugging Face tests: a tiny MM-Rec model, a BPE tokenizer trained on the bundled text, a
trainer-style final/ folder and its exported HF folder. Everything runs offline."""
from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from mmrec_model import MMRecConfig, MMRecLM  # noqa: E402
from mmrec_model.data.sources import DATA_DIR as CORPUS_DIR  # noqa: E402
from mmrec_model.tokenizer import Tokenizer  # noqa: E402

VOCAB = MMRecConfig.preset("tiny").vocab_size


def tiny_lm(seed: int = 0, **overrides) -> MMRecLM:
    """The tiny preset with larger initial weights, so that greedy decoding does not repeat one token."""
    torch.manual_seed(seed)
    return MMRecLM(MMRecConfig.preset("tiny", init_std=0.3, **overrides)).eval()


@pytest.fixture(scope="session")
def tok() -> Tokenizer:
    text = (CORPUS_DIR / "pretrain" / "tinyshakespeare_train.txt").read_text(encoding="utf-8")
    tok = Tokenizer.train(text.splitlines()[:20000], vocab_size=VOCAB)
    assert tok.vocab_size == VOCAB
    return tok


@pytest.fixture(scope="session")
def lm() -> MMRecLM:
    return tiny_lm()


@pytest.fixture(scope="session")
def final_dir(tmp_path_factory, lm, tok):
    """What the trainer's save_final writes: MMRecLM.save_pretrained + tokenizer.json (+ meta.json)."""
    path = tmp_path_factory.mktemp("run") / "pretrain" / "final"
    lm.save_pretrained(path)
    tok.save(path / "tokenizer.json")
    (path / "meta.json").write_text("{}\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory, final_dir):
    from mmrec_model.hf import export
    return export(final_dir.parent.parent, tmp_path_factory.mktemp("hf") / "mmrec-tiny")
