"""mmrec_ops: the MM-Rec kernels as torch ops.

``import mmrec_ops`` registers ``torch.ops.mmrec.scan``, ``recurrence``, ``mdi``, ``memory_update`` and ``memory_read``
(with fake
implementations and autograd). See docs/SPEC.md for the math and README.md for the backends.

Layers, each importing only those below it (pyproject.toml's import-linter contract checks it): this face ->
ops (schemas, fake, autograd) -> dispatch (forcing, resolution) -> backends (ref, native, triton wrappers) ->
reference, validate -> outputs (allocation) / _C and triton_kernels (the kernels).
"""
from . import reference
from .backends.native import decode_step_cpu, has_decode_step_cpu
from .dispatch import available_backends, backend, built_backends
from .ops import mdi, memory_read, memory_update, recurrence, scan
from .outputs import acc_dtype

__all__ = ["scan", "recurrence", "mdi", "memory_update", "memory_read", "reference", "backend", "available_backends",
           "built_backends", "acc_dtype", "decode_step_cpu", "has_decode_step_cpu"]
__version__ = "0.1.0"
