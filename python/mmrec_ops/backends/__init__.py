"""The implementations behind the ops, one module per backend, each with one table {op: Wrappers} for every
device it serves:

- ``ref``: mmrec_ops.reference (pure PyTorch loops), any device;
- ``native``: the C++ kernels of mmrec_ops._C, which dispatch by device themselves (backends ``cpu`` and ``cuda``);
- ``triton``: the Triton kernels (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1).

A wrapper makes its inputs contiguous, allocates the outputs (mmrec_ops.outputs) and calls its kernel; it checks
nothing (mmrec_ops.validate did). mmrec_ops.dispatch picks the table; the backends never import each other.
"""
from __future__ import annotations

from typing import Callable, NamedTuple


class Wrappers(NamedTuple):
    """forward(*op_args) -> output; backward(grad, *saved) -> one gradient per tensor input (ops.py lists the saved
    arguments of each op: the op's inputs and its output)."""
    forward: Callable
    backward: Callable
