"""CPU `memory_update` (fused) against the reference loop; prints a table and writes JSON.

    python bench/bench_memory_update.py           # B=8, NC=64, S=64, D=512 and B=1, NC=256, S=32, D=256, float32
    python bench/bench_memory_update.py --quick   # small shapes

The reference (one batched torch op per step of the chunk loop, autograd for the backward) is also the
unfused composition: nothing coarser exists in torch for a softmax-addressed sequential write.
GB/s counts the op's memory-traffic floor: forward reads M0, key, value, strength and writes Ms; backward
reads grad, Ms, key, value, strength and writes dM0, dkey, dvalue, dstrength (the big terms: Ms and
grad, B*(NC+1)*S*D each). %copy is that rate over the copy bandwidth of a 256 MB torch copy in the same run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mmrec_ops  # noqa: E402
from common import Row, copy_bandwidth_gbs, print_table, save, time_ms  # noqa: E402

SHAPES = [(8, 64, 64, 512), (1, 256, 32, 256)]  # (B, NC, S, D)
QUICK_SHAPES = [(2, 16, 16, 64)]
REFERENCE = "reference (per-chunk loop)"


def fused(M0, key, value, strength):
    with mmrec_ops.backend("cpu"):
        return mmrec_ops.memory_update(M0, key, value, strength)


IMPLS: Dict[str, Callable] = {"mmrec-cpu (fused)": fused, REFERENCE: mmrec_ops.reference.memory_update}


def reuse_freed_memory() -> None:
    """glibc serves allocations of 32 MB and more with mmap and unmaps them on free, so every call that
    returns a big tensor first-touches fresh pages (on the shared 2-core VM: torch.empty(64 MB).fill_ took
    84 ms against 12 ms for fill_ of a live tensor). Serving everything from the heap and never trimming it
    measures the kernels instead; the copy bandwidth reference never page-faults either. It distorts the
    torch baselines (the reference loops ran 2-10x slower with it on the shared VM): read GB/s and %copy of
    the fused kernel from a run with it, speed-ups from a run without."""
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
        raise RuntimeError("mallopt failed")


def make_inputs(shape: Tuple[int, int, int, int], dtype, grad: bool):
    B, NC, S, D = shape
    g = torch.Generator().manual_seed(0)
    xs = (torch.randn(B, S, D, generator=g), torch.randn(B, NC, D, generator=g),
          torch.randn(B, NC, D, generator=g), torch.rand(B, NC, generator=g))
    return [x.to(dtype).requires_grad_(grad) for x in xs]


def floor_elements(shape, pass_: str) -> int:
    B, NC, S, D = shape
    fwd = B * S * D + 2 * B * NC * D + B * NC + B * (NC + 1) * S * D
    bwd = 2 * B * (NC + 1) * S * D + 4 * B * NC * D + 2 * B * NC + B * S * D
    return fwd if pass_ == "fwd" else fwd + bwd


def flops(shape, pass_: str) -> int:
    B, NC, S, D = shape
    per = 5 if pass_ == "fwd" else 5 + 12  # per slot element and chunk (kernel header)
    return per * B * NC * S * D


def bench_case(fn, shape, dtype, pass_: str):
    inputs = make_inputs(shape, dtype, grad=pass_ == "fwd+bwd")
    if pass_ == "fwd":
        def step():
            with torch.no_grad():
                fn(*inputs)
    else:
        B, NC, S, D = shape
        grad = torch.randn(B, NC + 1, S, D, dtype=dtype)

        def step():
            for x in inputs:
                x.grad = None
            fn(*inputs).backward(grad)
    return step


def main(argv=None) -> List[Row]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--skip", nargs="*", default=[], help="implementations to leave out (substring match)")
    p.add_argument("--reuse-memory", action="store_true",
                   help="keep freed memory in the process (glibc mallopt), so fresh outputs do not page-fault")
    args = p.parse_args(argv)
    if args.reuse_memory:
        reuse_freed_memory()
    copy_gbs = copy_bandwidth_gbs("cpu")
    rows: List[Row] = []
    dtype = torch.float32
    for shape in (QUICK_SHAPES if args.quick else SHAPES):
        for name, fn in IMPLS.items():
            if any(s in name for s in args.skip):
                continue
            for pass_ in ("fwd", "fwd+bwd"):
                # The reference loop is 10-100x slower: one warm-up and three samples are enough for the ratio.
                ms = time_ms(bench_case(fn, shape, dtype, pass_), "cpu",
                             warmup=1 if name == REFERENCE else 2, repeat=3 if name == REFERENCE else 9,
                             max_seconds=60.0 if name == REFERENCE else 20.0)
                gbs = floor_elements(shape, pass_) * 4 / (ms * 1e-3) / 1e9
                print(f"# {shape} {name} {pass_}: {ms:.2f} ms", file=sys.stderr, flush=True)
                rows.append(Row("memory_update", "x".join(map(str, shape)), "float32", name, pass_,
                                ms, gbs, flops(shape, pass_) / (ms * 1e-3) / 1e9))
    print_table(rows, copy_gbs, baseline=REFERENCE)
    cmd = "python bench/bench_memory_update.py" + (" --quick" if args.quick else "") + \
        (" --reuse-memory" if args.reuse_memory else "")
    name = "memory_update_cpu" + ("_quick" if args.quick else "") + ("_reuse" if args.reuse_memory else "")
    print("wrote", save(name, rows, copy_gbs, cmd))
    return rows


if __name__ == "__main__":
    main()
