"""Shared fixtures: a small data directory cut from the bundled data, and tiny run settings."""
import json
import os
from pathlib import Path

import pytest
import torch

from mmrec_model.data import DATA_DIR

# tiny shapes on a shared 2-core machine: one thread avoids OpenMP spin contention (10x slower steps)
torch.set_num_threads(1)

# tiny model, short sequences, few steps: every stage runs in seconds on 2 cores
TINY_RUN = {
    "preset": "tiny",
    "vocab_size": 512,
    "tokenizer_max_chars": 120_000,
    "progress": False,
    "stages": {
        "pretrain": {"batch_size": 4, "seq_len": 32, "lr": 3e-3, "warmup_steps": 2, "eval_every": 4,
                     "eval_windows": 8, "eval_batch_size": 8, "save_every": 3, "sample_tokens": 8, "tbptt": True},
        "instruct": {"batch_size": 4, "seq_len": 48, "lr": 3e-3, "warmup_steps": 2, "eval_every": 4,
                     "eval_windows": 8, "eval_batch_size": 8, "save_every": 3, "sample_tokens": 8},
        "chat": {"batch_size": 4, "seq_len": 64, "lr": 3e-3, "warmup_steps": 2, "eval_every": 4,
                 "eval_windows": 8, "eval_batch_size": 8, "save_every": 3, "sample_tokens": 8},
    },
}


def _head_lines(src: Path, dst: Path, n: int) -> None:
    with open(src, encoding="utf-8") as f:
        lines = [next(f) for _ in range(n)]
    dst.write_text("".join(lines), encoding="utf-8")


@pytest.fixture(scope="session", autouse=True)
def token_cache(tmp_path_factory):
    """Token shards of the tests go to a temporary cache (also for training subprocesses, which inherit the
    environment), never to the user's ~/.cache/mmrec."""
    path = tmp_path_factory.mktemp("mmrec-cache")
    old = os.environ.get("MMREC_CACHE")
    os.environ["MMREC_CACHE"] = str(path)
    yield path / "tokens"
    if old is None:
        os.environ.pop("MMREC_CACHE", None)
    else:
        os.environ["MMREC_CACHE"] = old


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """pretrain/ instruct/ chat/ with a few hundred KB of the bundled files."""
    root = tmp_path_factory.mktemp("data")
    for stage in ("pretrain", "instruct", "chat"):
        (root / stage).mkdir()
    text = (DATA_DIR / "pretrain" / "tinyshakespeare_train.txt").read_text(encoding="utf-8")
    (root / "pretrain" / "shakespeare_train.txt").write_text(text[:150_000], encoding="utf-8")
    valid = (DATA_DIR / "pretrain" / "tinyshakespeare_valid.txt").read_text(encoding="utf-8")
    (root / "pretrain" / "shakespeare_valid.txt").write_text(valid[:20_000], encoding="utf-8")
    _head_lines(DATA_DIR / "instruct" / "alpacalibre_train.jsonl", root / "instruct" / "alpaca_train.jsonl", 300)
    _head_lines(DATA_DIR / "instruct" / "alpacalibre_valid.jsonl", root / "instruct" / "alpaca_valid.jsonl", 20)
    _head_lines(DATA_DIR / "chat" / "oasst_en_train.jsonl", root / "chat" / "oasst_train.jsonl", 80)
    _head_lines(DATA_DIR / "chat" / "oasst_en_valid.jsonl", root / "chat" / "oasst_valid.jsonl", 10)
    return root


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(TINY_RUN), encoding="utf-8")
    return path


def read_metrics(run: Path, kind: str = "train"):
    out = []
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r["kind"] == kind:
            out.append(r)
    return out
