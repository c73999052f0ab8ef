"""Tokenising and batching: token streams, rendered examples with loss masks, training and held-out
batches. A training step takes a global batch of rows; with DDP each rank takes its contiguous slice of
those rows, and its slice is cut into micro-batches for gradient accumulation. Targets are -100 where no
loss is taken (prompt tokens, padding)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

from ..tokenizer import Tokenizer
from .sources import DataError, text_pieces

IGNORE = -100


# ----------------------------------------------------------------------------------------------
# tokenising

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

    def _make(self) -> torch.Tensor:
        """[n] int64 (8 bytes per index: a Python list would take 36)."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def take(self, k: int) -> List[int]:
        out: List[int] = []
        while len(out) < k:
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._make()
            m = min(k - len(out), self.n - self.pos)
            out += self._perm[self.pos:self.pos + m].tolist()
            self.pos += m
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
    """Pre-training batches from one token stream: an int tensor [N], or anything with len() whose contiguous
    slices are int64 tensors (data.shards.TokenStream over memory-mapped shards gives the same windows).

    Without TBPTT: windows of seq_len + 1 tokens at multiples of seq_len, in a fresh random order
    every epoch. With TBPTT: the stream is cut into `batch_size` contiguous lanes and each step
    takes the next segment of every lane, so a row continues where the same row of the previous step
    ended and the recurrent state can be carried; lanes restart (reset=True) at each epoch.
    With DDP every rank draws the same global rows and reads only its slice of them, so ranks read disjoint
    windows and N ranks train on the rows one process would. The position (state_dict) is a few integers and
    the stream's length, which a resumed run checks against its data.
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
            return {"segment": self.segment, "epoch": self.epoch, "stream_tokens": len(self.ids)}
        return {**self.order.state_dict(), "stream_tokens": len(self.ids)}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("stream_tokens")
        if saved is not None and int(saved) != len(self.ids):
            raise DataError(f"the checkpoint's data position is in a stream of {int(saved):,} tokens, but the "
                            f"training data now gives {len(self.ids):,}: the data changed since the checkpoint")
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


def eval_text_batches(ids, seq_len: int, batch_size: int, max_windows: int) -> List[MicroBatch]:
    """Up to `max_windows` windows spread evenly over a held-out stream (as TextBatches takes it), in batches."""
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
