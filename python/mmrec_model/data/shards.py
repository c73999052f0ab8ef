"""Token shards on disk: one token stream written as fixed-size shards of compact integers, read back through
numpy memory maps, so a corpus larger than memory costs address space, not RAM.

A shard set is one directory:

    index.json          {"format", "dtype", "tokens", "shards": [{"file", "tokens", "crc32"}],
                         "documents": {"file", "count", "crc32"}, "meta": {...}}
    shard-00000.bin     raw little-endian tokens (uint16 while the vocabulary fits, else uint32)
    documents.bin       int64 [documents]: the end offset (exclusive) of every document in the stream; a
                        document's last token is its <|endoftext|>

It is written into a temporary sibling directory and renamed into place when complete, so an interrupted write
never leaves a set that looks usable. Opening checks every file's size and CRC-32 against the index (read
through a small buffer, not the memory map, so checking does not grow the process's resident memory) and
raises ShardError naming the damaged file.
"""
from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .sources import DataError

FORMAT = 1
INDEX = "index.json"
DOCUMENTS = "documents.bin"
_CHECK_BYTES = 1 << 22          # read buffer of the CRC check


class ShardError(DataError):
    """A shard set that is missing, incomplete or damaged; the message names the file."""


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def _crc_file(path: Path) -> int:
    crc = 0
    buf = bytearray(_CHECK_BYTES)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return crc
            crc = zlib.crc32(view[:n], crc)


class ShardWriter:
    """Appends token arrays to a new shard set at `final`; `finish()` publishes it atomically.

    Use as a context manager: leaving it by an exception (or without finish) removes the temporary directory.
    """

    def __init__(self, final: Path, dtype: np.dtype, shard_tokens: int):
        if shard_tokens < 1:
            raise ValueError(f"shard_tokens must be >= 1, got {shard_tokens}")
        self.final, self.dtype, self.shard_tokens = Path(final), np.dtype(dtype), shard_tokens
        self.tmp = self.final.parent / f".tmp-{self.final.name}-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.shards: List[Dict[str, Any]] = []
        self.tokens = 0
        self._file = None
        self._docs = open(self.tmp / DOCUMENTS, "wb")
        self._docs_crc, self._doc_count = 0, 0
        self._limit = np.iinfo(self.dtype).max

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self.tmp.exists():
            self._close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _close(self) -> None:
        for f in (self._file, self._docs):
            if f is not None and not f.closed:
                f.close()

    def add(self, ids: np.ndarray) -> None:
        """Appends tokens [n] (any integer dtype whose values fit this set's dtype)."""
        ids = np.asarray(ids)
        if ids.size and (int(ids.max()) > self._limit or int(ids.min()) < 0):
            raise ValueError(f"token ids outside 0..{self._limit} cannot be stored as {self.dtype}")
        ids = ids.astype(self.dtype, copy=False)
        while ids.size:
            if self._file is None or self.shards[-1]["tokens"] == self.shard_tokens:
                self._open_shard()
            shard = self.shards[-1]
            part = ids[:self.shard_tokens - shard["tokens"]]
            data = part.tobytes()
            self._file.write(data)
            shard["crc32"] = zlib.crc32(data, shard["crc32"])
            shard["tokens"] += len(part)
            self.tokens += len(part)
            ids = ids[len(part):]

    def _open_shard(self) -> None:
        if self._file is not None:
            self._file.close()
        name = f"shard-{len(self.shards):05d}.bin"
        self._file = open(self.tmp / name, "wb")
        self.shards.append({"file": name, "tokens": 0, "crc32": 0})

    def end_document(self) -> None:
        """Marks the end of a document at the current length of the stream."""
        data = np.array([self.tokens], dtype="<i8").tobytes()
        self._docs.write(data)
        self._docs_crc = zlib.crc32(data, self._docs_crc)
        self._doc_count += 1

    def finish(self, meta: Dict[str, Any]) -> Path:
        """Writes the index and renames the set into place; returns its directory. When another process
        published the same set first, that one is kept."""
        self._close()
        index = {"format": FORMAT, "dtype": self.dtype.str, "tokens": self.tokens, "shards": self.shards,
                 "documents": {"file": DOCUMENTS, "count": self._doc_count, "crc32": self._docs_crc},
                 "meta": meta}
        for entry in self.shards + [index["documents"]]:
            with open(self.tmp / entry["file"], "rb+") as f:
                os.fsync(f.fileno())
        with open(self.tmp / INDEX, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(self.tmp, self.final)
        except OSError:
            if not (self.final / INDEX).is_file():
                raise
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.final


def read_index(directory: Path) -> Dict[str, Any]:
    path = Path(directory) / INDEX
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(f"{path}: missing (an incomplete shard set)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ShardError(f"{path}: unreadable shard index ({e})") from None
    try:
        if index["format"] != FORMAT:
            raise ShardError(f"{path}: shard format {index['format']}, expected {FORMAT}")
        np.dtype(index["dtype"])
        total = 0
        for entry in index["shards"]:
            total += int(entry["tokens"])
            int(entry["crc32"]), str(entry["file"])
        if total != int(index["tokens"]):
            raise ShardError(f"{path}: its shards hold {total} tokens, the index says {index['tokens']}")
        int(index["documents"]["count"]), int(index["documents"]["crc32"])
    except (KeyError, TypeError, ValueError) as e:
        raise ShardError(f"{path}: malformed shard index ({type(e).__name__}: {e})") from None
    return index


def check_shards(directory: Path, index: Dict[str, Any]) -> None:
    """Every file of the set has the size and CRC-32 the index gives (ShardError naming the first that not)."""
    itemsize = np.dtype(index["dtype"]).itemsize
    entries = [(e, int(e["tokens"]) * itemsize) for e in index["shards"]]
    entries.append((index["documents"], int(index["documents"]["count"]) * 8))
    for entry, size in entries:
        path = Path(directory) / entry["file"]
        if not path.is_file():
            raise ShardError(f"{path}: missing")
        if path.stat().st_size != size:
            raise ShardError(f"{path}: {path.stat().st_size} bytes, the index says {size} (truncated or damaged)")
        if _crc_file(path) != int(entry["crc32"]):
            raise ShardError(f"{path}: CRC-32 differs from the index (damaged)")


class TokenStream:
    """The token stream of a shard set, memory-mapped: `len(stream)` tokens; `stream[a:b]` is an int64 tensor
    copied out of the maps (windows may cross shard boundaries); `documents` the document end offsets."""

    def __init__(self, directory, verify: bool = True):
        self.directory = Path(directory)
        self.index = read_index(self.directory)
        if verify:
            check_shards(self.directory, self.index)
        dtype = np.dtype(self.index["dtype"])
        self._maps = [np.memmap(self.directory / e["file"], dtype=dtype, mode="r", shape=(int(e["tokens"]),))
                      for e in self.index["shards"] if int(e["tokens"])]
        sizes = [len(m) for m in self._maps]
        self._starts = np.cumsum([0] + sizes)           # [shards + 1] stream offset of every shard
        count = int(self.index["documents"]["count"])
        self.documents = (np.memmap(self.directory / DOCUMENTS, dtype="<i8", mode="r", shape=(count,))
                          if count else np.zeros(0, dtype="<i8"))

    @property
    def meta(self) -> Dict[str, Any]:
        return self.index.get("meta", {})

    @property
    def num_shards(self) -> int:
        return len(self._maps)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, key) -> torch.Tensor:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("TokenStream supports contiguous slices only")
        start, stop, _ = key.indices(len(self))
        out = np.empty(max(stop - start, 0), dtype=np.int64)
        pos = start
        shard = int(np.searchsorted(self._starts, start, side="right")) - 1
        while pos < stop:
            base = int(self._starts[shard])
            end = min(stop, int(self._starts[shard + 1]))
            out[pos - start:end - start] = self._maps[shard][pos - base:end - base]
            pos, shard = end, shard + 1
        return torch.from_numpy(out)

    def shard_bounds(self) -> List[int]:
        """Stream offsets where shards start (after the first)."""
        return [int(s) for s in self._starts[1:-1]]


def open_shards(directory, verify: bool = True) -> Optional[TokenStream]:
    """The TokenStream of `directory`, or None when there is no set there (ShardError when it is damaged)."""
    if not Path(directory).exists():
        return None
    return TokenStream(directory, verify)
