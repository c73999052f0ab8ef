"""`python -m mmrec_model.prepare`: tokenise a pre-training corpus into the shared token cache before training.

    python -m mmrec_model.prepare --tokenizer runs/big/tokenizer.json --train-data 'corpus/*.txt' \\
        --valid-data corpus/valid.txt [--cache-dir DIR] [--shard-tokens N]

Text files, directories, globs and `hf:NAME[:CONFIG][@SPLIT]` datasets (streamed) are encoded in parallel
batches into memory-mapped token shards keyed by (tokenizer, sources); `python -m mmrec_model.train` with the
same tokenizer and files finds them and starts without tokenising (it prepares them itself when missing).
Without --tokenizer, the BPE is trained as the trainer trains it (vocab_size, tokenizer_max_chars) and cached
beside the shards, where the trainer finds it, so prepare can run first.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from . import data as D
from .data.prepare import DEFAULT_SHARD_TOKENS, cached_tokenizer, default_cache_dir, describe_set
from .data.stage import load_stage_sources, prepare_stage_tokens
from .errors import CheckpointError
from .tokenizer import Tokenizer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmrec_model.prepare", allow_abbrev=False,
                                description="Tokenise pre-training text into memory-mapped token shards.")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (or a run/checkpoint folder holding one)")
    p.add_argument("--save-tokenizer", default=None, help="without --tokenizer: also copy the BPE here")
    p.add_argument("--vocab-size", type=int, default=2048, help="without --tokenizer: BPE size (trainer default)")
    p.add_argument("--tokenizer-max-chars", type=int, default=4_000_000,
                   help="without --tokenizer: characters the BPE is trained on (trainer default)")
    p.add_argument("--data-dir", default=None, help="a directory with pretrain/ files (default: the bundled corpus)")
    p.add_argument("--train-data", nargs="+", default=None, help="training specs (files, dirs, globs, hf:NAME)")
    p.add_argument("--valid-data", nargs="+", default=None, help="held-out specs")
    p.add_argument("--cache-dir", default=None, help=f"token cache (default {default_cache_dir()})")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per shard file")
    p.add_argument("--on-bad-record", choices=("skip", "error"), default="skip")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda s: print(s, flush=True)     # noqa: E731
    try:
        sources = load_stage_sources("pretrain", args.train_data, args.valid_data, args.data_dir,
                                     args.on_bad_record, log)
        if args.tokenizer:
            tok = Tokenizer.load(args.tokenizer)
        else:
            tok, cached = cached_tokenizer(sources[0], args.vocab_size, args.tokenizer_max_chars, args.cache_dir, log)
            if args.save_tokenizer:
                Path(args.save_tokenizer).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cached, args.save_tokenizer)
        t0 = time.perf_counter()
        train, valid = prepare_stage_tokens(tok, sources, args.cache_dir, args.on_bad_record, log,
                                            args.shard_tokens)
    except (D.DataError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log(f"train: {describe_set(train)}")
    for name, stream in valid.items():
        log(f"held-out {name}: {describe_set(stream)}")
    log(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
