"""mmrec_ops: the MM-Rec kernels as torch ops.

``import mmrec_ops`` registers ``torch.ops.mmrec.scan``, ``recurrence``, ``mdi`` and
``memory_update``, ``memory_read`` (with fake implementations and autograd). See SPEC.md / README for the math.
"""
from . import reference
from .backends import available_backends, backend, built_backends
from .ops import mdi, memory_read, memory_update, recurrence, scan

__all__ = ["scan", "recurrence", "mdi", "memory_update", "memory_read", "reference", "backend", "available_backends",
           "built_backends"]
__version__ = "0.1.0"
