"""Which backend runs an op: name -> wrapper table, forcing, and the choice per (op, device).

Backends: ``ref`` (pure PyTorch, any device), ``cpu`` (C++ kernels), ``cuda`` (CUDA C++ kernels), ``triton``
(Triton kernels; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``). By default a CPU tensor goes to
``cpu`` and a CUDA tensor to ``cuda``, else ``triton`` (memory_read: ``triton`` first, measured faster); an op without a kernel on a device is served by ``ref``
there, and :func:`available_backends` says so. ``with backend(name):`` or ``MMREC_BACKEND=name`` forces one: a
forced backend that is not built, or has no kernel for the op on that device, raises (never a silent fallback).

The choice is made once per (op, device type, forced backend) and cached: a call pays one dictionary lookup.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from .backends import Wrappers, native, ref

BACKENDS = ("ref", "cpu", "cuda", "triton")
OPS = ("scan", "recurrence", "mdi", "memory_update", "memory_read")
DEVICES = ("cpu", "cuda")
_DEFAULT_ORDER = {"cpu": ("cpu", "ref"), "cuda": ("cuda", "triton", "ref")}
# memory_read on CUDA tensors: the Triton kernels run 0.46 ms forward, 2.45 forward+backward against 29.2 / 86.1
# for the CUDA kernel (one block per row and head, sequential in T); H200, bf16 B=8 T=2048 D=768
# (bench/results/device/run-2026-12-02-h200-s/readcheck.log)
_OP_ORDER = {("memory_read", "cuda"): ("triton", "cuda", "ref")}

_forced: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("mmrec_backend", default=None)


def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


@functools.lru_cache(maxsize=None)
def why_not_built(name: str) -> Optional[str]:
    """None if backend `name` can run here, else the reason it cannot."""
    if name == "ref":
        return None
    if name in ("cpu", "cuda"):
        if native._C is None:
            return f"the extension mmrec_ops._C failed to import ({native.IMPORT_ERROR})"
        if name == "cuda":
            if not native._C.has_cuda:
                return "mmrec_ops._C was built without CUDA kernels (no nvcc, or MMREC_CUDA=OFF)"
            if not torch.cuda.is_available():
                return "no CUDA device is available"
        return None
    if name == "triton":
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (pip install 'mmrec[triton]')"
        if importlib.util.find_spec("mmrec_ops.triton_kernels") is None:
            return "this build of mmrec_ops has no Triton kernels"
        if not (torch.cuda.is_available() or _triton_interpret()):
            return "triton needs a CUDA device (or TRITON_INTERPRET=1 to run on CPU tensors)"
        return None
    return f"unknown backend {name!r}; choose from {BACKENDS}"


def built_backends() -> List[str]:
    """Backends that can run on this machine."""
    return [b for b in BACKENDS if why_not_built(b) is None]


def _table(name: str) -> Dict[str, Wrappers]:
    """The wrapper table of a built backend (importing triton, which takes seconds, only when it is asked for)."""
    if name == "triton":
        from .backends import triton
        return triton.TABLE
    return ref.TABLE if name == "ref" else native.TABLE


def _devices(name: str) -> Tuple[str, ...]:
    """The device types whose tensors backend `name` takes."""
    if name == "ref":
        return DEVICES
    if name == "triton":
        return DEVICES if _triton_interpret() else ("cuda",)
    return (name,)


def serves(name: str, op: str, device_type: str) -> bool:
    """True if backend `name` is built and has a kernel for `op` on `device_type` tensors."""
    if device_type == "cuda" and not torch.cuda.is_available():
        return False
    return why_not_built(name) is None and device_type in _devices(name) and op in _table(name)


def forced_backend() -> Optional[str]:
    """The backend forced by ``with backend(...)`` or MMREC_BACKEND, if any."""
    name = _forced.get() or os.environ.get("MMREC_BACKEND") or None
    if name is not None and name not in BACKENDS:
        raise ValueError(f"MMREC_BACKEND={name!r} is not a backend; choose from {BACKENDS}")
    return name


@functools.lru_cache(maxsize=None)
def resolve(op: str, device_type: str, name: Optional[str] = None) -> Tuple[str, Wrappers]:
    """(backend, wrappers) that run `op` on `device_type` tensors: backend `name` if given, else by device."""
    if name is not None:
        reason = why_not_built(name)
        if reason is not None:
            raise RuntimeError(f"mmrec backend {name!r} was forced but cannot run: {reason}")
        if not serves(name, op, device_type):
            raise ValueError(f"mmrec backend {name!r} was forced but has no {op!r} kernel for {device_type} tensors")
        return name, _table(name)[op]
    for candidate in _OP_ORDER.get((op, device_type), _DEFAULT_ORDER.get(device_type, ("ref",))):
        if serves(candidate, op, device_type):
            return candidate, _table(candidate)[op]
    raise RuntimeError(f"no mmrec backend serves {op!r} on {device_type} tensors")


def wrappers(op: str, device: torch.device, name: str = "") -> Wrappers:
    """The wrappers that run `op` on `device`: backend `name`, else the forced one, else the device's default."""
    return resolve(op, device.type, name or forced_backend())[1]


def available_backends() -> Dict[str, Dict[str, Optional[str]]]:
    """{op: {device: backend}}: which implementation serves each op on each device by default (None: a device
    that cannot run here)."""
    return {op: {dev: resolve(op, dev)[0] if dev == "cpu" or torch.cuda.is_available() else None for dev in DEVICES}
            for op in OPS}


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Force backend `name` (``ref``, ``cpu``, ``cuda``, ``triton``) for every mmrec op in the block."""
    if name not in BACKENDS:
        raise ValueError(f"unknown mmrec backend {name!r}; choose from {BACKENDS}")
    reason = why_not_built(name)
    if reason is not None:
        raise RuntimeError(f"mmrec backend {name!r} cannot run here: {reason}")
    token = _forced.set(name)
    try:
        yield
    finally:
        _forced.reset(token)
