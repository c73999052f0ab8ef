"""Data for the three stages: loading and checking records, tokenising, batching with loss masks.

Formats (one loader each):
- plain text (pre-training): any UTF-8 file; every file is one document, followed by <|endoftext|>;
- Alpaca-style instructions: JSONL (one object a line) or a JSON array of objects with
  `instruction`, `output` and an optional `input`;
- chat: JSONL/JSON of `{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}`.
A data spec is a file, a directory (its *.txt / *.jsonl / *.json files), a glob, or
`hf:NAME[:CONFIG][@SPLIT]` for a Hugging Face dataset (needs the `datasets` package and a network).

Malformed records are collected as `path:line: reason` problems while loading, before any training
step runs: with ``on_bad="skip"`` they are reported and left out, with ``on_bad="error"`` loading
raises :class:`DataError` listing them.

Batches: a training step takes a global batch of rows; with DDP each rank takes its contiguous slice
of those rows, and its slice is cut into micro-batches for gradient accumulation. Targets are -100
where no loss is taken (prompt tokens, padding).
"""
from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

from .tokenizer import ROLES, Tokenizer

DATA_DIR = Path(__file__).resolve().parent / "data"
STAGES = ("pretrain", "instruct", "chat")
STAGE_KIND = {"pretrain": "text", "instruct": "instruct", "chat": "chat"}
KIND_SUFFIXES = {"text": (".txt",), "instruct": (".jsonl", ".json"), "chat": (".jsonl", ".json")}
IGNORE = -100


class DataError(ValueError):
    """Unusable training data (missing files, malformed records under on_bad='error', nothing left)."""


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class Source:
    """Records of one data spec (a file or a dataset)."""
    name: str
    records: list


# ----------------------------------------------------------------------------------------------
# locating files

def default_specs(stage: str, data_dir, split: str) -> List[str]:
    """The files of `stage` in `data_dir` (or `data_dir/<stage>/`) for split 'train' or 'valid'.

    Training files have 'train' in their name; held-out files have 'valid' or 'test'.
    """
    root = Path(data_dir)
    folder = root / stage if (root / stage).is_dir() else root
    if not folder.is_dir():
        raise DataError(f"data directory {folder} does not exist")
    keys = ("train",) if split == "train" else ("valid", "test")
    suffixes = KIND_SUFFIXES[STAGE_KIND[stage]]
    files = sorted(str(p) for p in folder.iterdir()
                   if p.is_file() and p.suffix in suffixes and any(k in p.name for k in keys))
    return files


def expand_specs(specs: Sequence[str], kind: str, data_dir=None) -> List[str]:
    """Files (and hf: specs) named by `specs`; relative paths are tried against cwd, then `data_dir`."""
    out: List[str] = []
    for spec in specs:
        spec = str(spec)
        if spec.startswith("hf:"):
            out.append(spec)
            continue
        candidates = [Path(spec).expanduser()]
        if data_dir is not None and not Path(spec).is_absolute():
            candidates.append(Path(data_dir) / spec)
        found: List[str] = []
        for cand in candidates:
            if any(ch in str(cand) for ch in "*?["):
                found = sorted(p for p in glob.glob(str(cand)) if Path(p).is_file())
            elif cand.is_dir():
                found = sorted(str(p) for p in cand.iterdir()
                               if p.is_file() and p.suffix in KIND_SUFFIXES[kind])
            elif cand.is_file():
                found = [str(cand)]
            if found:
                break
        if not found:
            raise DataError(f"data spec {spec!r} matches no file" +
                            (f" (looked in . and {data_dir})" if data_dir is not None else ""))
        out += found
    return out


# ----------------------------------------------------------------------------------------------
# parsing records

def _check_str(obj: dict, key: str, required: bool) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing field {key!r}")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def parse_instruct(obj) -> Dict[str, str]:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    record = {"instruction": _check_str(obj, "instruction", True), "input": _check_str(obj, "input", False),
              "output": _check_str(obj, "output", True)}
    if not record["instruction"].strip():
        raise ValueError("empty 'instruction'")
    if not record["output"].strip():
        raise ValueError("empty 'output'")
    return record


def parse_chat(obj) -> List[Dict[str, str]]:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] must be an object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string")
        if role == "system" and i != 0:
            raise ValueError(f"messages[{i}]: a system message may only come first")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in out):
        raise ValueError("no non-empty assistant message (nothing to learn)")
    return out


PARSERS: Dict[str, Callable] = {"instruct": parse_instruct, "chat": parse_chat}


def _json_items(path: str) -> Iterator[Tuple[int, object, Optional[str]]]:
    """(line, object, error) for each record of a JSONL file or a JSON array file."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if path.endswith(".json") and text is not None and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            yield e.lineno, None, f"invalid JSON: {e.msg}"
            return
        for i, item in enumerate(items):
            yield i + 1, item, None   # records of a JSON array are numbered, not lined
        return
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line.decode("utf-8")), None
        except UnicodeDecodeError as e:
            yield lineno, None, f"invalid UTF-8 ({e.reason} at byte {e.start})"
        except json.JSONDecodeError as e:
            yield lineno, None, f"invalid JSON: {e.msg} (column {e.colno})"


def _read_text(path: str, problems: List[Problem]) -> str:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            problems.append(Problem(path, lineno, f"invalid UTF-8 ({e.reason} at byte {e.start}); line left out"))
    return "\n".join(lines)


def _load_hf(spec: str, kind: str, problems: List[Problem]) -> Source:
    """`hf:NAME[:CONFIG][@SPLIT]`: a Hugging Face dataset, converted to this stage's record kind."""
    try:
        import datasets
    except ImportError as e:
        raise DataError(f"{spec}: Hugging Face datasets need the `datasets` package (pip install datasets)") from e
    body = spec[3:]
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as e:  # network, unknown name, ...: report it as a data problem
        raise DataError(f"{spec}: could not load the dataset: {e}") from e
    records = []
    for i, row in enumerate(ds):
        try:
            if kind == "text":
                text = row.get("text")
                if not isinstance(text, str):
                    raise ValueError("no string column 'text'")
                records.append(text)
            elif kind == "chat" and "messages" not in row and "conversations" in row:
                roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                         "system": "system"}
                msgs = [{"role": roles.get(m.get("from"), m.get("from")), "content": m.get("value")}
                        for m in row["conversations"]]
                records.append(parse_chat({"messages": msgs}))
            else:
                records.append(PARSERS[kind](dict(row)))
        except ValueError as e:
            problems.append(Problem(spec, i + 1, str(e)))
    if kind == "text":
        records = ["\n".join(records)]
    return Source(spec, records)


def load_sources(specs: Sequence[str], kind: str, on_bad: str = "skip", data_dir=None,
                 log: Callable[[str], None] = print) -> List[Source]:
    """Loads and checks every record named by `specs` (see the module docstring)."""
    if on_bad not in ("skip", "error"):
        raise ValueError(f"on_bad must be 'skip' or 'error', got {on_bad!r}")
    if kind not in KIND_SUFFIXES:
        raise ValueError(f"kind must be one of {tuple(KIND_SUFFIXES)}, got {kind!r}")
    problems: List[Problem] = []
    sources: List[Source] = []
    for path in expand_specs(specs, kind, data_dir):
        if path.startswith("hf:"):
            sources.append(_load_hf(path, kind, problems))
            continue
        if kind == "text":
            sources.append(Source(path, [_read_text(path, problems)]))
            continue
        records = []
        for lineno, obj, error in _json_items(path):
            if error is None:
                try:
                    records.append(PARSERS[kind](obj))
                    continue
                except ValueError as e:
                    error = str(e)
            problems.append(Problem(path, lineno, error))
        sources.append(Source(path, records))
    if problems:
        listing = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        if on_bad == "error":
            raise DataError(f"{len(problems)} malformed record(s):\n  {listing}{more}")
        log(f"warning: skipped {len(problems)} malformed record(s):\n  {listing}{more}")
    if not any(s.records for s in sources):
        raise DataError(f"no usable {kind} records in {list(specs)}")
    return sources


# ----------------------------------------------------------------------------------------------
# tokenising

def text_pieces(text: str, piece_chars: int = 1 << 16) -> Iterator[str]:
    """`text` cut at line ends into pieces of about `piece_chars` (for batched encoding/training)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + piece_chars)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def encode_documents(tok: Tokenizer, documents: Iterable[str]) -> torch.Tensor:
    """One stream of token ids [N]: each document followed by <|endoftext|>."""
    ids: List[int] = []
    for doc in documents:
        for piece in tok.encode_batch(list(text_pieces(doc))):
            ids += piece
        ids.append(tok.eos_id)
    return torch.tensor(ids, dtype=torch.long)


def render_examples(tok: Tokenizer, kind: str, records: Iterable, max_len: int) -> Tuple[list, int]:
    """(examples, dropped): (ids, mask) int tensors cut to `max_len` tokens; those with no target left dropped."""
    examples, dropped = [], 0
    for r in records:
        if kind == "instruct":
            ids, mask = tok.render_instruction(r["instruction"], r["input"], r["output"])
        else:
            ids, mask = tok.render_chat(r)
        ids, mask = ids[:max_len], mask[:max_len]
        if sum(mask[1:]) == 0:
            dropped += 1
            continue
        examples.append((torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.bool)))
    return examples, dropped


def targets_from_mask(ids: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) for next-token prediction; targets are -100 where mask is 0."""
    x = ids[:-1]
    y = torch.where(mask[1:], ids[1:], torch.full_like(ids[1:], IGNORE))
    return x, y


# ----------------------------------------------------------------------------------------------
# batching

def rank_rows(rows: Sequence, rank: int, world: int) -> Sequence:
    per = len(rows) // world
    return rows[rank * per:(rank + 1) * per]


def split_micro(rows: Sequence, micro: int) -> List[Sequence]:
    return [rows[i:i + micro] for i in range(0, len(rows), micro)]


class _EpochOrder:
    """An endless, reproducible order of indices 0..n-1: a fresh permutation every epoch."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.pos = 0, 0
        self._perm = self._make()

    def _make(self) -> List[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def take(self, k: int) -> List[int]:
        out = []
        for _ in range(k):
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._make()
            out.append(self._perm[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._make()


@dataclass
class MicroBatch:
    x: torch.Tensor          # [b, T] input ids
    y: torch.Tensor          # [b, T] target ids, -100 = no loss
    lane: int = 0            # TBPTT: index of this micro-batch's carried state
    reset: bool = False      # TBPTT: start this segment from a fresh state


class TextBatches:
    """Pre-training batches from one token stream.

    Without TBPTT: windows of seq_len + 1 tokens at multiples of seq_len, in a fresh random order
    every epoch. With TBPTT: the stream is cut into `batch_size` contiguous lanes and each step
    takes the next segment of every lane, so a row continues where the same row of the previous step
    ended and the recurrent state can be carried; lanes restart (reset=True) at each epoch.
    """

    def __init__(self, ids: torch.Tensor, seq_len: int, batch_size: int, micro_batch: int, seed: int,
                 tbptt: bool = False, rank: int = 0, world: int = 1):
        if batch_size % world or (batch_size // world) % micro_batch:
            raise ValueError(f"batch_size {batch_size} must split into {world} rank(s) x micro-batches of {micro_batch}")
        self.ids, self.T, self.B, self.micro, self.tbptt = ids, seq_len, batch_size, micro_batch, tbptt
        self.rank, self.world = rank, world
        if tbptt:
            self.lane_len = (len(ids) - 1) // batch_size
            self.segments = self.lane_len // seq_len
            if self.segments < 1:
                raise DataError(f"{len(ids)} tokens are too few for {batch_size} TBPTT lanes of {seq_len} tokens")
            self.segment = 0
            self.epoch = 0
        else:
            n = (len(ids) - 1) // seq_len
            if n < 1:
                raise DataError(f"{len(ids)} tokens are too few for one window of {seq_len + 1}")
            self.order = _EpochOrder(n, seed)

    def next(self) -> List[MicroBatch]:
        T = self.T
        if self.tbptt:
            lanes = list(range(self.B))
            mine = rank_rows(lanes, self.rank, self.world)
            starts = [lane * self.lane_len + self.segment * T for lane in mine]
            reset = self.segment == 0
            self.segment += 1
            if self.segment == self.segments:
                self.segment, self.epoch = 0, self.epoch + 1
        else:
            mine = rank_rows(self.order.take(self.B), self.rank, self.world)
            starts = [i * T for i in mine]
            reset = False
        rows = torch.stack([self.ids[s:s + T + 1] for s in starts])      # [b, T+1]
        return [MicroBatch(rows[i:i + self.micro, :-1], rows[i:i + self.micro, 1:], lane=k, reset=reset)
                for k, i in enumerate(range(0, len(starts), self.micro))]

    def state_dict(self) -> dict:
        if self.tbptt:
            return {"segment": self.segment, "epoch": self.epoch}
        return self.order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.tbptt:
            self.segment, self.epoch = int(state["segment"]), int(state["epoch"])
        else:
            self.order.load_state_dict(state)


def pad_examples(examples: Sequence[Tuple[torch.Tensor, torch.Tensor]], pad_id: int, multiple: int = 8,
                 length: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x, y) [b, T]: examples padded at the end; T = the longest, rounded up to `multiple` (or `length`)."""
    pairs = [targets_from_mask(ids, mask) for ids, mask in examples]
    longest = max(len(x) for x, _ in pairs)
    T = length if length is not None else -(-longest // multiple) * multiple
    x = torch.full((len(pairs), T), pad_id, dtype=torch.long)
    y = torch.full((len(pairs), T), IGNORE, dtype=torch.long)
    for i, (xi, yi) in enumerate(pairs):
        x[i, :len(xi)] = xi
        y[i, :len(yi)] = yi
    return x, y


class ExampleBatches:
    """Instruction/chat batches: whole examples (one per row, padded), in a fresh random order each epoch."""

    def __init__(self, examples: list, batch_size: int, micro_batch: int, seed: int, pad_id: int,
                 rank: int = 0, world: int = 1, pad_multiple: int = 8, fixed_len: Optional[int] = None):
        if batch_size % world or (batch_size // world) % micro_batch:
            raise ValueError(f"batch_size {batch_size} must split into {world} rank(s) x micro-batches of {micro_batch}")
        if not examples:
            raise DataError("no training examples")
        self.examples, self.B, self.micro, self.pad_id = examples, batch_size, micro_batch, pad_id
        self.rank, self.world, self.pad_multiple, self.fixed_len = rank, world, pad_multiple, fixed_len
        self.order = _EpochOrder(len(examples), seed)

    def next(self) -> List[MicroBatch]:
        mine = rank_rows(self.order.take(self.B), self.rank, self.world)
        out = []
        for k, rows in enumerate(split_micro(mine, self.micro)):
            x, y = pad_examples([self.examples[i] for i in rows], self.pad_id, self.pad_multiple, self.fixed_len)
            out.append(MicroBatch(x, y, lane=k))
        return out

    def state_dict(self) -> dict:
        return self.order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state)


def eval_text_batches(ids: torch.Tensor, seq_len: int, batch_size: int, max_windows: int) -> List[MicroBatch]:
    """Up to `max_windows` windows spread evenly over a held-out stream, in batches."""
    n = (len(ids) - 1) // seq_len
    if n < 1:
        return []
    picks = torch.linspace(0, n - 1, steps=min(n, max_windows)).round().long().unique().tolist()
    rows = torch.stack([ids[i * seq_len:i * seq_len + seq_len + 1] for i in picks])
    return [MicroBatch(rows[i:i + batch_size, :-1], rows[i:i + batch_size, 1:])
            for i in range(0, len(rows), batch_size)]


def eval_example_batches(examples: list, batch_size: int, max_examples: int, pad_id: int,
                         pad_multiple: int = 8) -> List[MicroBatch]:
    """The first `max_examples` held-out examples, in padded batches."""
    chosen = examples[:max_examples]
    return [MicroBatch(*pad_examples(chosen[i:i + batch_size], pad_id, pad_multiple))
            for i in range(0, len(chosen), batch_size)]


def tokenizer_corpus(sources: Sequence[Source], max_chars: int) -> Iterator[str]:
    """Text for BPE training: the pre-training documents, at most `max_chars` characters in all."""
    budget = max_chars
    for s in sources:
        for doc in s.records:
            for piece in text_pieces(doc[:budget]):
                yield piece
            budget -= min(len(doc), budget)
            if budget <= 0:
                return


def stage_files(stage: str, split: str, specs: Optional[Sequence[str]], data_dir) -> List[str]:
    """The specs of a stage's split: the given ones, else the defaults found in `data_dir`."""
    if specs:
        return list(specs)
    files = default_specs(stage, data_dir, split)
    if not files and split == "train":
        raise DataError(f"no {stage} training files in {data_dir} (expected names containing 'train' "
                        f"under {Path(data_dir) / stage})")
    return files


__all__ = ["DATA_DIR", "STAGES", "STAGE_KIND", "DataError", "Problem", "Source", "load_sources", "default_specs",
           "expand_specs", "parse_instruct", "parse_chat", "encode_documents", "render_examples",
           "targets_from_mask", "TextBatches", "ExampleBatches", "MicroBatch", "pad_examples",
           "eval_text_batches", "eval_example_batches", "tokenizer_corpus", "stage_files", "IGNORE"]
