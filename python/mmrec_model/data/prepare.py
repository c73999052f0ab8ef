"""Preparing token streams: text sources streamed through the BPE in parallel batches into a shard set
(data/shards.py), cached per (tokenizer, sources) in a folder shared by runs and stages.

The stream of a list of sources is what `encode_documents` gives: every document (a text file, or a row of a
Hugging Face text dataset) cut into text_pieces, each piece encoded on its own, the document followed by
<|endoftext|>. Pieces of consecutive documents are encoded together in batches of about `batch_chars`
characters by the `tokenizers` batch encoder, which spreads a batch over its threads; memory stays bounded by
one batch (its Python id lists, about 40 bytes a token, dominate) and one file block.

The cache key covers the tokenizer, the encoding scheme and every source (a file by absolute path, size and
modification time; a dataset by its spec), so a changed file or tokenizer gives a new set. A damaged set is
reported with its path and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..tokenizer import Tokenizer
from .shards import ShardError, ShardWriter, TokenStream, token_dtype
from .sources import PIECE_CHARS, Problem, Source, document_pieces, report_problems

SCHEME = f"pieces={PIECE_CHARS};eos-after-document"
DEFAULT_SHARD_TOKENS = 1 << 26          # 128 MiB shards in uint16
DEFAULT_BATCH_CHARS = 1 << 22           # characters per encode_batch call


def default_cache_dir() -> Path:
    """$MMREC_CACHE/tokens, else ~/.cache/mmrec/tokens."""
    root = os.environ.get("MMREC_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "mmrec") / "tokens"


def cache_key(tok: Tokenizer, sources: Sequence[Source]) -> str:
    h = hashlib.sha256()
    h.update(hashlib.sha256(tok.to_str().encode()).digest())
    h.update(SCHEME.encode())
    _source_key(h, sources)
    return h.hexdigest()[:24]


def _source_key(h, sources: Sequence[Source]) -> None:
    for s in sources:
        if s.records is not None:          # records in memory (tests, small inputs): keyed by content
            doc_hash = hashlib.sha256()
            for doc in s.records:
                doc_hash.update(hashlib.sha256(doc.encode("utf-8", "surrogatepass")).digest())
            h.update(f"records|{s.name}|{doc_hash.hexdigest()}\n".encode())
        elif s.name.startswith("hf:"):
            h.update(f"hf|{s.name}\n".encode())
        else:
            st = os.stat(s.name)
            h.update(f"file|{os.path.abspath(s.name)}|{st.st_size}|{st.st_mtime_ns}\n".encode())


def cached_tokenizer(sources: Sequence[Source], vocab_size: int, max_chars: int, cache_dir=None,
                     log: Callable[[str], None] = print) -> Tuple[Tokenizer, Path]:
    """(the BPE trained on the first `max_chars` characters of `sources`, its file in the cache). Training is
    deterministic, so the BPE is cached per (sources, vocab_size, max_chars, tokenizers version) beside the
    token shards: a later run on the same corpus loads it instead of training it again."""
    import tokenizers
    from .sources import tokenizer_corpus
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    h = hashlib.sha256(f"bpe|{vocab_size}|{max_chars}|{tokenizers.__version__}|{SCHEME}\n".encode())
    _source_key(h, sources)
    path = cache_dir / "tokenizers" / f"{h.hexdigest()[:24]}.json"
    if path.is_file():
        try:
            tok = Tokenizer.load(path)
            log(f"tokenizer: the cached BPE of these sources, {path}")
            return tok, path
        except Exception as e:               # a damaged file: said so, trained again
            log(f"warning: {path}: unusable cached tokenizer ({e}); training it again")
    t0 = time.perf_counter()
    used = [0]

    def corpus():
        for piece in tokenizer_corpus(sources, max_chars):
            used[0] += len(piece)
            yield piece
    tok = Tokenizer.train(corpus(), vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tok.save(tmp)
    os.replace(tmp, path)
    log(f"tokenizer: byte-level BPE with {tok.vocab_size} tokens trained on {used[0]:,} characters in "
        f"{time.perf_counter() - t0:.1f} s (cached in {path})")
    return tok, path


def _describe(sources: Sequence[Source]) -> List[str]:
    return [s.name for s in sources]


def encode_to_shards(tok: Tokenizer, sources: Sequence[Source], writer: ShardWriter,
                     batch_chars: int = DEFAULT_BATCH_CHARS) -> List[Problem]:
    """Streams the documents of `sources` through the tokenizer into `writer`; returns the problems met
    (lines that are not UTF-8, dataset rows without text)."""
    problems: List[Problem] = []
    eos = np.array([tok.eos_id], dtype=np.int64)
    batch: List[Tuple[str, bool]] = []      # (piece, whether it ends its document)
    chars = 0

    def flush() -> None:
        encoded = tok.encode_batch([p for p, _ in batch])
        for ids, (_, last) in zip(encoded, batch):
            if ids:
                writer.add(np.array(ids, dtype=np.int64))
            if last:
                writer.add(eos)
                writer.end_document()
        batch.clear()

    for source in sources:
        for pieces in document_pieces(source, problems):
            pending: Optional[str] = None
            for piece in pieces:
                if pending is not None:
                    batch.append((pending, False))
                    chars += len(pending)
                pending = piece
                if chars >= batch_chars:
                    flush()
                    chars = 0
            batch.append((pending or "", True))
            chars += len(pending or "")
    if batch:
        flush()
    return problems


def prepare_tokens(tok: Tokenizer, sources: Sequence[Source], cache_dir=None, *, on_bad: str = "skip",
                   shard_tokens: int = DEFAULT_SHARD_TOKENS, batch_chars: int = DEFAULT_BATCH_CHARS,
                   log: Callable[[str], None] = print, verify: bool = True) -> TokenStream:
    """The token stream of `sources` from the cache, built first when missing or damaged.

    Problems met while encoding are reported (on_bad='skip') or refused (on_bad='error', and then nothing is
    cached); a cached set re-reports the problems it was built with.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache_dir / cache_key(tok, sources)
    if final.exists():
        try:
            stream = TokenStream(final, verify=verify)
            report_problems([Problem(*p) for p in stream.meta.get("problems", [])], on_bad, log)
            return stream
        except ShardError as e:
            log(f"warning: {e}; rebuilding the token shards in {final}")
            shutil.rmtree(final)
    _remove_stale(cache_dir, final.name)
    t0 = time.perf_counter()
    with ShardWriter(final, token_dtype(tok.vocab_size), shard_tokens) as writer:
        problems = encode_to_shards(tok, sources, writer, batch_chars)
        report_problems(problems, on_bad, log)      # raises under on_bad='error': nothing is published
        meta = {"sources": _describe(sources), "vocab_size": tok.vocab_size, "scheme": SCHEME,
                "problems": [[p.path, p.line, p.reason] for p in problems[:1000]]}
        writer.finish(meta)
        tokens, shards = writer.tokens, len(writer.shards)
    dt = time.perf_counter() - t0
    log(f"prepared {tokens:,} tokens in {shards} shard(s) in {dt:.1f} s: {final}")
    return TokenStream(final, verify=False)


def _remove_stale(cache_dir: Path, name: str) -> None:
    """Temporary directories of `name` left by processes that no longer run (interrupted writes)."""
    for tmp in cache_dir.glob(f".tmp-{name}-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_set(stream: TokenStream) -> str:
    return json.dumps({"directory": str(stream.directory), "tokens": len(stream), "shards": stream.num_shards,
                       "documents": len(stream.documents), "dtype": stream.index["dtype"]})
