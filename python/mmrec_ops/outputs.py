"""What every backend allocates: outputs (NaN-filled under test, so an element a kernel never writes fails the
comparison with the reference) and the accumulation dtype of its scratch buffers. The bottom layer of mmrec_ops:
it imports nothing of the package."""
from __future__ import annotations

import os

import torch

_poison = os.environ.get("MMREC_POISON", "") not in ("", "0")


def set_poison(enabled: bool) -> None:
    """Fill kernel outputs with NaN before the kernels write them (MMREC_POISON=1 sets it at import)."""
    global _poison
    _poison = bool(enabled)


def new_output(shape, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised (or NaN-poisoned) tensor of `shape` with the dtype and device of `like`."""
    if _poison:
        return torch.full(shape, float("nan"), dtype=like.dtype, device=like.device)
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the ops accumulate in for inputs of `dtype`: float64 for float64, else float32 (SPEC.md)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
