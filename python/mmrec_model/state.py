"""The recurrent state MMRecLM carries between segments: per layer (h, m, slots, open-chunk sum), constant
size whatever the context length."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

import torch
from torch import Tensor


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of `dtype`: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass
class LayerState:
    """What one block carries between segments; constant size whatever the context length."""
    h: Tensor          # [B, D]     last output of the core recurrence
    m: Tensor          # [B, N, D]  the N bank memories
    slots: Tensor      # [B, S, D]  long-term slots after the last complete chunk
    chunk_sum: Tensor  # [B, D]     sum of h over the open chunk (float32; float64 for a float64 model)

    def map(self, fn) -> "LayerState":
        return LayerState(fn(self.h), fn(self.m), fn(self.slots), fn(self.chunk_sum))


@dataclass
class MMRecState:
    layers: List[LayerState]
    position: int      # tokens consumed so far; the open chunk holds position % chunk_len of them

    @property
    def batch_size(self) -> int:
        return self.layers[0].h.shape[0]

    def detach(self) -> "MMRecState":
        """The same state cut from the autograd graph (truncated BPTT between training segments)."""
        return MMRecState([s.map(Tensor.detach) for s in self.layers], self.position)

    def copy(self) -> "MMRecState":
        """The state cut from the autograd graph in memory of its own: a CUDA-graph replay (torch.compile
        mode="reduce-overhead") overwrites the outputs of the one before it."""
        return MMRecState([s.map(lambda x: x.detach().clone()) for s in self.layers], self.position)

    def at_position(self, position: int) -> "MMRecState":
        """The same tensors with `position` tokens counted as consumed. The model reads only position % chunk_len,
        so a position moved by a multiple of chunk_len gives the same outputs."""
        return MMRecState(self.layers, position)

    def to(self, *args, **kwargs) -> "MMRecState":
        """Tensor.to on every tensor; chunk sums keep their float32/float64 accumulation dtype."""
        def move(x: Tensor) -> Tensor:
            return x.to(*args, **kwargs)
        layers = []
        for s in self.layers:
            moved = s.map(move)
            moved.chunk_sum = s.chunk_sum.to(device=moved.h.device, dtype=acc_dtype(moved.h.dtype))
            layers.append(moved)
        return MMRecState(layers, self.position)

    def select(self, index: Union[Tensor, List[int]]) -> "MMRecState":
        """The state of a subset (or reordering) of the batch rows."""
        return MMRecState([s.map(lambda x: x[index]) for s in self.layers], self.position)


def pack_state(state: Optional[MMRecState]) -> Optional[Dict[str, Any]]:
    """A CPU copy of `state` as plain lists and ints (what a checkpoint stores)."""
    if state is None:
        return None
    return {"position": state.position,
            "layers": [[s.h.cpu(), s.m.cpu(), s.slots.cpu(), s.chunk_sum.cpu()] for s in state.layers]}


def unpack_state(packed: Optional[Dict[str, Any]], device) -> Optional[MMRecState]:
    """Inverse of pack_state, on `device`."""
    if packed is None:
        return None
    return MMRecState([LayerState(*(t.to(device) for t in layer)) for layer in packed["layers"]],
                      int(packed["position"]))
