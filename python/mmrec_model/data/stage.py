"""A stage's data: its sources read and checked, training batches and held-out evaluation batches, token
streams cached per (tokenizer, files) in the run directory."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from ..tokenizer import Tokenizer
from . import batches as DB
from . import sources as DS


def load_stage_sources(stage: str, train: Optional[Sequence[str]], valid: Optional[Sequence[str]], data_dir,
                       on_bad_record: str, log) -> tuple:
    """(train sources, held-out sources) of a stage, every record checked (see sources.load_sources); specs
    None = the stage's default files in data_dir (None = the bundled corpus)."""
    kind = DS.STAGE_KIND[stage]
    data_dir = data_dir or DS.DATA_DIR
    train_specs = DS.stage_files(stage, "train", train, data_dir)
    valid_specs = DS.stage_files(stage, "valid", valid, data_dir)
    train = DS.load_sources(train_specs, kind, on_bad_record, data_dir, log)
    valid = DS.load_sources(valid_specs, kind, on_bad_record, data_dir, log) if valid_specs else []
    return train, valid


class StageData:
    """A stage's training batches and held-out evaluation batches."""

    def __init__(self, stage: str, cfg, sources: tuple, tok: Tokenizer, rank: int, world: int,
                 micro: int, seed: int, cache_dir: Optional[Path], pad_multiple: int, log):
        """cfg: the stage's settings (seq_len, batch_size, tbptt, eval_batch_size, eval_windows);
        pad_multiple: example rows are padded to a multiple of it."""
        kind = DS.STAGE_KIND[stage]
        train_sources, valid_sources = sources
        self.eval_sets: Dict[str, List[DB.MicroBatch]] = {}
        if kind == "text":
            stream = _cached(cache_dir, tok, train_sources,
                             lambda: DB.encode_documents(tok, [r for s in train_sources for r in s.records]))
            self.batches = DB.TextBatches(stream, cfg.seq_len, cfg.batch_size, micro, seed, cfg.tbptt,
                                         rank, world)
            self.train_tokens = len(stream)
            for s in valid_sources:
                ids = _cached(cache_dir, tok, [s], lambda: DB.encode_documents(tok, s.records))
                self.eval_sets[_set_name(s.name)] = DB.eval_text_batches(ids, cfg.seq_len, cfg.eval_batch_size,
                                                                        cfg.eval_windows)
        else:
            records = [r for s in train_sources for r in s.records]
            examples, dropped = DB.render_examples(tok, kind, records, cfg.seq_len + 1)
            if dropped:
                log(f"{stage}: {dropped} example(s) have no target token within seq_len={cfg.seq_len} "
                    f"and were left out")
            self.batches = DB.ExampleBatches(examples, cfg.batch_size, micro, seed, tok.pad_id, rank, world,
                                            pad_multiple=pad_multiple)
            self.train_tokens = sum(len(e[0]) for e in examples)
            for s in valid_sources:
                ex, _ = DB.render_examples(tok, kind, s.records, cfg.seq_len + 1)
                if ex:
                    self.eval_sets[_set_name(s.name)] = DB.eval_example_batches(
                        ex, cfg.eval_batch_size, cfg.eval_windows, tok.pad_id, pad_multiple=pad_multiple)


def _set_name(spec: str) -> str:
    return spec if spec.startswith("hf:") else Path(spec).stem


def _cached(cache_dir: Optional[Path], tok: Tokenizer, sources, build):
    """Token streams cached per (tokenizer, files) in the run directory (they are re-read on resume)."""
    if cache_dir is None or any(s.name.startswith("hf:") for s in sources):
        return build()
    h = hashlib.sha1(tok.to_str().encode())
    for s in sources:
        st = os.stat(s.name)
        h.update(f"{os.path.abspath(s.name)}|{st.st_size}|{st.st_mtime_ns}".encode())
    path = cache_dir / f"tokens-{h.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:
            pass
    ids = build()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(ids, tmp)
    os.replace(tmp, path)
    return ids
