"""The process a run lives in: device and DDP ranks, the forced ops backend, seeds, autocast, and the
signals that ask the stage loop to checkpoint and stop."""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import random
import signal
from dataclasses import dataclass

import mmrec_ops
import torch

from .config import TrainConfig

@dataclass
class Runtime:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    distributed: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def all_sum(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t)
        return float(t.item())

    def all_max(self, value: int) -> int:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self._comm_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4          # glibc mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Serves every allocation of this process from the heap and keeps freed memory there for reuse (glibc
    mallopt: M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 1 GiB). By default glibc maps each block over 32 MiB afresh and
    unmaps it when freed, so the buffers a CPU training step allocates anew every time (the [T, V] logits and their
    gradient, the [V, D] gradients of the LM head and the embedding: 100-200 MB each at the original's size) pay a
    page fault per 4 KiB page on every step (bench/results/model_cpu_malloc.md: the 163M step 3.33 -> 2.51 s).
    A freed block is reused when a later request fits in it (after coalescing with its free neighbours); requests
    that fit none extend the heap. Process-wide and not undone; the freed memory stays in the process (peak RSS +10%
    there). Returns False, changing nothing, where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def setup_runtime(device_arg: str) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_arg)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device_arg}: CUDA is not available")
        if world > 1 or device.index is None:
            device = torch.device("cuda", local_rank if world > 1 else 0)
        torch.cuda.set_device(device)
    if device.type == "cpu":
        keep_freed_memory()
    rt = Runtime(rank, world, local_rank, device, world > 1)
    if rt.distributed and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rt


def select_backend(name: str) -> None:
    """Forces mmrec_ops backend `name` for every op in this process (and its autograd threads)."""
    with mmrec_ops.backend(name):      # raises a clear error if the backend cannot run here
        pass
    os.environ["MMREC_BACKEND"] = name


def seed_everything(seed: int) -> None:
    import numpy as np
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def amp_context(tcfg: TrainConfig, device: torch.device):
    use = tcfg.amp == "bf16" or (tcfg.amp == "auto" and device.type == "cuda")
    if tcfg.amp not in ("auto", "bf16", "none"):
        raise ValueError(f"amp must be 'auto', 'bf16' or 'none', got {tcfg.amp!r}")
    if use:
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


class StopFlag:
    """SIGINT/SIGTERM ask the loop to checkpoint and stop at the next step boundary; a second SIGINT aborts."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:        # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class Interrupted(Exception):
    pass
