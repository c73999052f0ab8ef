"""bench/ on sys.path (the baselines and compare_models live there), and a small data directory."""
import sys
from pathlib import Path

import pytest
import torch

from mmrec_model.data import DATA_DIR

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

torch.set_num_threads(1)       # tiny shapes on a shared 2-core machine


def _head(src: Path, dst: Path, lines: int) -> None:
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(next(f) for _ in range(lines)), encoding="utf-8")


@pytest.fixture(scope="session")
def bench_data(tmp_path_factory) -> Path:
    """pretrain/ (two held-out sets), instruct/ and chat/ cut from the bundled data."""
    root = tmp_path_factory.mktemp("bench-data")
    for stage in ("pretrain", "instruct", "chat"):
        (root / stage).mkdir()
    pre = DATA_DIR / "pretrain"
    (root / "pretrain" / "shakespeare_train.txt").write_text(
        (pre / "tinyshakespeare_train.txt").read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    for name in ("tinyshakespeare_valid", "gutenberg_valid"):
        (root / "pretrain" / f"{name}.txt").write_text((pre / f"{name}.txt").read_text(encoding="utf-8")[:8_000],
                                                       encoding="utf-8")
    _head(DATA_DIR / "instruct" / "alpacalibre_train.jsonl", root / "instruct" / "alpaca_train.jsonl", 200)
    _head(DATA_DIR / "instruct" / "alpacalibre_valid.jsonl", root / "instruct" / "alpaca_valid.jsonl", 12)
    _head(DATA_DIR / "chat" / "oasst_en_train.jsonl", root / "chat" / "oasst_train.jsonl", 60)
    _head(DATA_DIR / "chat" / "oasst_en_valid.jsonl", root / "chat" / "oasst_valid.jsonl", 8)
    return root
