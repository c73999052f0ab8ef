"""Data sources of the three stages: locating files, loading and checking records.

Formats (one loader each):
- plain text (pre-training): any UTF-8 file; every file is one document, followed by <|endoftext|>;
- Alpaca-style instructions: JSONL (one object a line) or a JSON array of objects with
  `instruction`, `output` and an optional `input`;
- chat: JSONL/JSON of `{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}`.
A data spec is a file, a directory (its *.txt / *.jsonl / *.json files), a glob, or
`hf:NAME[:CONFIG][@SPLIT]` for a Hugging Face dataset (needs the `datasets` package and a network; text
datasets are streamed, each row one document).

Malformed records are collected as `path:line: reason` problems while loading, before any training
step runs: with ``on_bad="skip"`` they are reported and left out, with ``on_bad="error"`` loading
raises :class:`DataError` listing them.
"""
from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..tokenizer import ROLES

DATA_DIR = Path(__file__).resolve().parent.parent / "corpus"
STAGES = ("pretrain", "instruct", "chat")
STAGE_KIND = {"pretrain": "text", "instruct": "instruct", "chat": "chat"}
KIND_SUFFIXES = {"text": (".txt",), "instruct": (".jsonl", ".json"), "chat": (".jsonl", ".json")}
PIECE_CHARS = 1 << 16       # text is encoded in pieces of about this many characters, cut at line ends
BLOCK_BYTES = 1 << 24       # text files are read in blocks of whole lines of about this many bytes


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
    """Records of one data spec (a file or a dataset). records None: a text file or text dataset that is
    streamed when it is tokenised (data.prepare), never held in memory."""
    name: str
    records: Optional[list]


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


def _decode_block(raw: bytes, path: str, first_line: int, problems: List[Problem]) -> str:
    """UTF-8 text of `raw` (whole lines of `path` from line `first_line`); lines that are not UTF-8 are
    reported and left out."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines = []
    for lineno, line in enumerate(raw.split(b"\n"), start=first_line):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            problems.append(Problem(path, lineno, f"invalid UTF-8 ({e.reason} at byte {e.start}); line left out"))
    return "\n".join(lines)


def read_text_blocks(path: str, problems: List[Problem], block_bytes: Optional[int] = None) -> Iterator[str]:
    """The text of `path` as blocks of whole lines of about `block_bytes` (default BLOCK_BYTES; memory bounded
    by one block); their concatenation is the file's text with non-UTF-8 lines left out."""
    block_bytes = block_bytes or BLOCK_BYTES
    line = 1
    with open(path, "rb") as f:
        carry = b""
        while True:
            chunk = f.read(block_bytes)
            raw = carry + chunk
            if not chunk:
                if raw:
                    yield _decode_block(raw, path, line, problems)
                return
            cut = raw.rfind(b"\n") + 1         # blocks end at a line end (a line longer than a block grows it)
            if cut == 0:
                carry = raw
                continue
            block, carry = raw[:cut], raw[cut:]
            yield _decode_block(block, path, line, problems)
            line += block.count(b"\n")


def _read_text(path: str, problems: List[Problem]) -> str:
    return "".join(read_text_blocks(path, problems))


def _datasets(spec: str):
    try:
        import datasets
    except ImportError as e:
        raise DataError(f"{spec}: Hugging Face datasets need the `datasets` package (pip install datasets)") from e
    return datasets


def _hf_args(spec: str) -> Tuple[str, Optional[str], str]:
    """(name, config, split) of `hf:NAME[:CONFIG][@SPLIT]`."""
    body, _, split = spec[3:].partition("@")
    name, _, config = body.partition(":")
    return name, config or None, split or "train"


def hf_text_documents(spec: str, problems: List[Problem]) -> Iterator[str]:
    """The `text` column of a Hugging Face dataset, row by row (streaming=True: rows are fetched as they are
    read, the dataset is never held whole); each row is one document. Rows without a string `text` are
    reported as problems and left out."""
    datasets = _datasets(spec)
    name, config, split = _hf_args(spec)
    try:
        rows = datasets.load_dataset(name, config, split=split, streaming=True)
        for i, row in enumerate(rows):
            text = row.get("text")
            if not isinstance(text, str):
                problems.append(Problem(spec, i + 1, "no string column 'text'"))
                continue
            yield text
    except DataError:
        raise
    except Exception as e:  # network, unknown name, ...: report it as a data problem
        raise DataError(f"{spec}: could not read the dataset: {e}") from e


def _load_hf(spec: str, kind: str, problems: List[Problem]) -> Source:
    """`hf:NAME[:CONFIG][@SPLIT]`: a Hugging Face dataset, converted to this stage's record kind (text is
    streamed when it is tokenised, see hf_text_documents)."""
    datasets = _datasets(spec)
    if kind == "text":
        return Source(spec, None)
    name, config, split = _hf_args(spec)
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # network, unknown name, ...: report it as a data problem
        raise DataError(f"{spec}: could not load the dataset: {e}") from e
    records = []
    for i, row in enumerate(ds):
        try:
            if kind == "chat" and "messages" not in row and "conversations" in row:
                roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                         "system": "system"}
                msgs = [{"role": roles.get(m.get("from"), m.get("from")), "content": m.get("value")}
                        for m in row["conversations"]]
                records.append(parse_chat({"messages": msgs}))
            else:
                records.append(PARSERS[kind](dict(row)))
        except ValueError as e:
            problems.append(Problem(spec, i + 1, str(e)))
    return Source(spec, records)


def load_sources(specs: Sequence[str], kind: str, on_bad: str = "skip", data_dir=None,
                 log: Callable[[str], None] = print, stream_text: bool = False) -> List[Source]:
    """Loads and checks every record named by `specs` (see the module docstring). stream_text: text files are
    only located here (records None); they are read, and their problems reported, when tokenised."""
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
            sources.append(Source(path, None if stream_text else [_read_text(path, problems)]))
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
    report_problems(problems, on_bad, log)
    if not any(s.records is None or s.records for s in sources):
        raise DataError(f"no usable {kind} records in {list(specs)}")
    return sources


def report_problems(problems: Sequence[Problem], on_bad: str, log: Callable[[str], None]) -> None:
    """Logs malformed records (on_bad='skip') or raises DataError listing them (on_bad='error')."""
    if not problems:
        return
    listing = "\n  ".join(str(p) for p in problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    if on_bad == "error":
        raise DataError(f"{len(problems)} malformed record(s):\n  {listing}{more}")
    log(f"warning: skipped {len(problems)} malformed record(s):\n  {listing}{more}")


def text_pieces(text: str, piece_chars: int = PIECE_CHARS) -> Iterator[str]:
    """`text` cut at line ends into pieces of about `piece_chars` (for batched encoding/training): each piece
    ends at the first line end at least `piece_chars` characters after its start, or at the end."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + piece_chars)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def stream_pieces(blocks: Iterable[str], piece_chars: int = PIECE_CHARS) -> Iterator[str]:
    """text_pieces("".join(blocks)) without joining the blocks: the same pieces, memory bounded by a block."""
    carry = ""
    for block in blocks:
        text = carry + block
        start = 0
        while True:
            end = text.find("\n", start + piece_chars)
            if end < 0:                      # the piece may end in a later block
                break
            yield text[start:end + 1]
            start = end + 1
        carry = text[start:]
    yield from text_pieces(carry, piece_chars)


def document_pieces(source: "Source", problems: List[Problem]) -> Iterator[Iterator[str]]:
    """Each document of a text source as an iterator of its text_pieces (files are streamed from disk)."""
    if source.records is not None:
        for doc in source.records:
            yield text_pieces(doc)
    elif source.name.startswith("hf:"):
        for doc in hf_text_documents(source.name, problems):
            yield text_pieces(doc)
    else:
        yield stream_pieces(read_text_blocks(source.name, problems))


def tokenizer_corpus(sources: Sequence[Source], max_chars: int, problems: Optional[List[Problem]] = None,
                     ) -> Iterator[str]:
    """Text for BPE training: the pre-training documents' pieces, at most `max_chars` characters in all
    (the piece that crosses the budget is cut there). Files are read only as far as the budget."""
    problems = [] if problems is None else problems
    budget = max_chars
    for s in sources:
        for pieces in document_pieces(s, problems):
            for piece in pieces:
                piece = piece[:budget]
                yield piece
                budget -= len(piece)
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
