"""mmrec_ops: the MM-Rec kernels as torch ops.

``import mmrec_ops`` registers ``torch.ops.mmrec.scan``, ``recurrence``, ``mdi`` and
``memory_update`` (with fake implementations and autograd). See SPEC.md / README for the math.
"""
from . import reference
from .backends import available_backends, backend, built_backends
from .ops import mdi, memory_update, recurrence, scan

__all__ = ["scan", "recurrence", "mdi", "memory_update", "reference", "backend", "available_backends",
           "built_backends"]
__version__ = "0.1.0"
