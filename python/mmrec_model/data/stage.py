"""A stage's data: its sources read and checked, training batches and held-out evaluation batches. Text
stages read token streams prepared into memory-mapped shards (data.prepare), shared by runs and stages."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..tokenizer import Tokenizer
from . import batches as DB
from . import sources as DS
from .prepare import DEFAULT_SHARD_TOKENS, prepare_tokens
from .shards import TokenStream


def load_stage_sources(stage: str, train: Optional[Sequence[str]], valid: Optional[Sequence[str]], data_dir,
                       on_bad_record: str, log) -> tuple:
    """(train sources, held-out sources) of a stage, every record checked (see sources.load_sources); specs
    None = the stage's default files in data_dir (None = the bundled corpus). Text files are only located
    here: they are streamed, and their problems reported, when tokenised."""
    kind = DS.STAGE_KIND[stage]
    data_dir = data_dir or DS.DATA_DIR
    train_specs = DS.stage_files(stage, "train", train, data_dir)
    valid_specs = DS.stage_files(stage, "valid", valid, data_dir)
    train = DS.load_sources(train_specs, kind, on_bad_record, data_dir, log, stream_text=True)
    valid = DS.load_sources(valid_specs, kind, on_bad_record, data_dir, log, stream_text=True) if valid_specs else []
    return train, valid


def prepare_stage_tokens(tok: Tokenizer, sources: tuple, cache_dir: Optional[Path], on_bad_record: str,
                         log, shard_tokens: int = DEFAULT_SHARD_TOKENS) -> tuple:
    """(train stream, {held-out set name: stream}) of a text stage: the training sources as one stream, each
    held-out source as its own."""
    train_sources, valid_sources = sources
    train = prepare_tokens(tok, train_sources, cache_dir, on_bad=on_bad_record, shard_tokens=shard_tokens,
                           log=log)
    valid = {_set_name(s.name): prepare_tokens(tok, [s], cache_dir, on_bad=on_bad_record,
                                               shard_tokens=shard_tokens, log=log)
             for s in valid_sources}
    return train, valid


class StageData:
    """A stage's training batches and held-out evaluation batches."""

    def __init__(self, stage: str, cfg, sources: tuple, tok: Tokenizer, rank: int, world: int,
                 micro: int, seed: int, cache_dir: Optional[Path], pad_multiple: int, log,
                 on_bad_record: str = "skip", shard_tokens: int = DEFAULT_SHARD_TOKENS,
                 barrier: Callable[[], None] = lambda: None):
        """cfg: the stage's settings (seq_len, batch_size, tbptt, eval_batch_size, eval_windows);
        cache_dir: the token cache (None = data.prepare.default_cache_dir()); pad_multiple: example rows are
        padded to a multiple of it; barrier: waits for every rank (rank 0 prepares the tokens first)."""
        kind = DS.STAGE_KIND[stage]
        train_sources, valid_sources = sources
        self.eval_sets: Dict[str, List[DB.MicroBatch]] = {}
        if kind == "text":
            if rank == 0:           # one rank tokenises; the others open what it wrote
                stream, valid = prepare_stage_tokens(tok, sources, cache_dir, on_bad_record, log, shard_tokens)
                barrier()
            else:
                barrier()
                stream, valid = prepare_stage_tokens(tok, sources, cache_dir, on_bad_record, lambda s: None,
                                                     shard_tokens)
            self.stream: TokenStream = stream
            self.batches = DB.TextBatches(stream, cfg.seq_len, cfg.batch_size, micro, seed, cfg.tbptt,
                                         rank, world)
            self.train_tokens = len(stream)
            for name, ids in valid.items():
                self.eval_sets[name] = DB.eval_text_batches(ids, cfg.seq_len, cfg.eval_batch_size, cfg.eval_windows)
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
