"""Backend registry: (backend, op) -> implementation, and the choice of one per call.

Backends: ``ref`` (pure PyTorch, any device), ``cpu`` (C++ kernels), ``cuda`` (CUDA C++ kernels),
``triton`` (Triton kernels; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``).
By default a CPU tensor goes to ``cpu`` and a CUDA tensor to ``cuda``, else ``triton``; an op
with no kernel on a device is served by ``ref`` there, and :func:`available_backends` says so.
``with backend(name):`` or ``MMREC_BACKEND=name`` forces one: a forced backend that is not
built, or has no kernel for the op on that device, raises (never a silent fallback).
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch

BACKENDS = ("ref", "cpu", "cuda", "triton")
OPS = ("scan", "recurrence", "mdi", "memory_update", "memory_read")
DEVICES = ("cpu", "cuda")
_DEFAULT_ORDER = {"cpu": ("cpu", "ref"), "cuda": ("cuda", "triton", "ref")}


@dataclass(frozen=True)
class Impl:
    """forward(*op_args) -> output; backward(grad, *saved) -> gradients (see ops.py for each op's saved list)."""
    forward: Callable
    backward: Callable


_IMPLS: Dict[Tuple[str, str], Impl] = {}
_forced: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("mmrec_backend", default=None)
_poison = os.environ.get("MMREC_POISON", "") not in ("", "0")


def register(backend_name: str, op: str, forward: Callable, backward: Callable) -> None:
    if backend_name not in BACKENDS or op not in OPS:
        raise ValueError(f"unknown backend/op {backend_name!r}/{op!r}")
    _IMPLS[(backend_name, op)] = Impl(forward, backward)


def _native():
    from . import _native
    return _native


def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


def why_not_built(name: str) -> Optional[str]:
    """None if backend `name` can run here, else the reason it cannot."""
    if name == "ref":
        return None
    if name in ("cpu", "cuda"):
        native = _native()
        if native.C is None:
            return f"the extension mmrec_ops._C failed to import ({native.IMPORT_ERROR})"
        if name == "cuda":
            if not native.C.has_cuda:
                return "mmrec_ops._C was built without CUDA kernels (no nvcc, or MMREC_CUDA=OFF)"
            if not torch.cuda.is_available():
                return "no CUDA device is available"
        return None
    if name == "triton":
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed (pip install 'mmrec[triton]')"
        if importlib.util.find_spec("mmrec_ops._triton") is None:
            return "this build of mmrec_ops has no Triton kernels"
        if not (torch.cuda.is_available() or _triton_interpret()):
            return "triton needs a CUDA device (or TRITON_INTERPRET=1 to run on CPU tensors)"
        return None
    return f"unknown backend {name!r}; choose from {BACKENDS}"


def built_backends() -> List[str]:
    """Backends that can run on this machine."""
    return [b for b in BACKENDS if why_not_built(b) is None]


def _devices_of(name: str) -> Tuple[str, ...]:
    if name == "ref":
        return DEVICES
    if name == "triton":
        return ("cpu", "cuda") if _triton_interpret() else ("cuda",)
    return (name,)


def serves(name: str, op: str, device_type: str) -> bool:
    """True if backend `name` has a kernel for `op` on `device_type` and is built."""
    if name != "ref":
        _load_backend(name)
    if device_type == "cuda" and not torch.cuda.is_available():
        return False
    return (name, op) in _IMPLS and device_type in _devices_of(name) and why_not_built(name) is None


_loaded: Dict[str, bool] = {}


def _load_backend(name: str) -> None:
    """Imports the module that registers backend `name`'s kernels (once, lazily)."""
    if name in _loaded:
        return
    _loaded[name] = True
    if why_not_built(name) is not None:
        return
    if name in ("cpu", "cuda"):
        _native().register_all()
    elif name == "triton":
        from . import _triton
        _triton.register_all()


def forced_backend() -> Optional[str]:
    name = _forced.get() or os.environ.get("MMREC_BACKEND") or None
    if name is not None and name not in BACKENDS:
        raise ValueError(f"MMREC_BACKEND={name!r} is not a backend; choose from {BACKENDS}")
    return name


def resolve(op: str, device_type: str, name: Optional[str] = None) -> Tuple[str, Impl]:
    """The backend that runs `op` on `device_type` (`name`, else the forced one, else by device)."""
    name = name or forced_backend()
    if name is not None:
        reason = why_not_built(name)
        if reason is not None:
            raise RuntimeError(f"mmrec backend {name!r} was forced but cannot run: {reason}")
        if not serves(name, op, device_type):
            raise ValueError(f"mmrec backend {name!r} was forced but has no {op!r} kernel for {device_type} tensors")
        return name, _IMPLS[(name, op)]
    for candidate in _DEFAULT_ORDER.get(device_type, ("ref",)):
        if serves(candidate, op, device_type):
            return candidate, _IMPLS[(candidate, op)]
    raise RuntimeError(f"no mmrec backend serves {op!r} on {device_type}")  # unreachable: ref serves all


def available_backends() -> Dict[str, Dict[str, str]]:
    """{op: {device: backend}}: which implementation serves each op on each device by default.

    A device that cannot run here (no GPU) maps to None.
    """
    table: Dict[str, Dict[str, str]] = {}
    for op in OPS:
        table[op] = {}
        for dev in DEVICES:
            if dev == "cuda" and not torch.cuda.is_available():
                table[op][dev] = None
                continue
            table[op][dev] = next(c for c in _DEFAULT_ORDER[dev] if serves(c, op, dev))
    return table


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


def set_poison(enabled: bool) -> None:
    """Fill kernel outputs with NaN before kernels write them (tests: every element must be written)."""
    global _poison
    _poison = bool(enabled)


def new_output(shape, like: torch.Tensor) -> torch.Tensor:
    if _poison:
        return torch.full(shape, float("nan"), dtype=like.dtype, device=like.device)
    return torch.empty(shape, dtype=like.dtype, device=like.device)
