"""Shared benchmark plumbing: timing, the machine's copy bandwidth, result tables and JSON."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: str = "cpu", warmup: int = 2, repeat: int = 7,
            max_seconds: float = 20.0) -> float:
    """Median wall time of fn() in milliseconds (CUDA: event-timed)."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples: List[float] = []
    budget = time.perf_counter() + max_seconds
    for _ in range(repeat):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() > budget and len(samples) >= 3:
            break
    return statistics.median(samples)


def copy_bandwidth_gbs(device: str = "cpu", nbytes: int = 256 << 20) -> float:
    """Bytes read + written per second by a torch copy of an `nbytes` tensor (the machine's ceiling)."""
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, warmup=2, repeat=9)
    return 2 * nbytes / (ms * 1e-3) / 1e9


@dataclass
class Row:
    op: str
    shape: str
    dtype: str
    backend: str
    pass_: str
    ms: float
    gbs: Optional[float] = None
    gflops: Optional[float] = None
    extra: Dict[str, float] = field(default_factory=dict)


def machine() -> Dict[str, object]:
    info = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_table(rows: List[Row], copy_gbs: float, baseline: str = "ref") -> None:
    """Rows grouped by (op, shape, dtype, pass); speed-ups against `baseline` and every other backend."""
    groups: Dict[tuple, List[Row]] = {}
    for r in rows:
        groups.setdefault((r.op, r.shape, r.dtype, r.pass_), []).append(r)
    header = f"{'op':<14}{'shape':<22}{'dtype':<9}{'pass':<9}{'backend':<22}{'ms':>10}{'GB/s':>8}{'%copy':>7}" \
             f"{'GFLOP/s':>9}  speed-up"
    print(header)
    print("-" * len(header))
    for key, group in groups.items():
        base = next((r for r in group if r.backend == baseline), None)
        for r in group:
            ups = []
            for other in group:
                if other is not r:
                    ups.append(f"{other.ms / r.ms:.1f}x vs {other.backend}")
            gbs = f"{r.gbs:8.1f}" if r.gbs else " " * 8
            frac = f"{100 * r.gbs / copy_gbs:6.0f}%" if r.gbs else " " * 7
            gfl = f"{r.gflops:9.1f}" if r.gflops else " " * 9
            print(f"{r.op:<14}{r.shape:<22}{r.dtype:<9}{r.pass_:<9}{r.backend:<22}{r.ms:10.3f}{gbs}{frac}{gfl}  "
                  + ", ".join(ups if base is not None or ups else []))
    print(f"copy bandwidth measured in this run: {copy_gbs:.1f} GB/s (read + write)")


def save(name: str, rows: List[Row], copy_gbs: float, command: str, out_dir: Optional[Path] = None) -> Path:
    out_dir = Path(out_dir or os.environ.get("MMREC_BENCH_OUT") or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {"command": command, "machine": machine(), "copy_gbs": copy_gbs,
               "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "rows": [{**asdict(r), "pass": r.pass_} for r in rows]}
    for row in payload["rows"]:
        row.pop("pass_")
    path.write_text(json.dumps(payload, indent=1))
    return path


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


def step_fn(fn: Callable, inputs, pass_: str, grad_shape) -> Callable[[], None]:
    """One timed call of fn(*inputs): forward under no_grad, or forward + backward of a random gradient of
    grad_shape (the inputs' gradients cleared first)."""
    if pass_ == "fwd":
        def step():
            with torch.no_grad():
                fn(*inputs)
        return step
    grad = torch.randn(*grad_shape, dtype=inputs[0].dtype)

    def step():
        for x in inputs:
            x.grad = None
        fn(*inputs).backward(grad)
    return step


def run_cpu_op_bench(op: str, script: str, shapes, quick_shapes, impls: Dict[str, Callable], reference: str,
                     bench_case: Callable, floor_elements: Callable, flops: Optional[Callable] = None,
                     skip: Optional[Callable] = None, argv=None) -> List[Row]:
    """The CPU op benchmarks' shared driver: flags, timing of every (shape, implementation, pass), the table
    and the JSON. bench_case(fn, shape, dtype, pass_) -> step; floor_elements/flops(shape, pass_) -> counts;
    skip(shape, name, pass_) -> reason or None."""
    import argparse
    import sys
    p = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__)
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
    for shape in (quick_shapes if args.quick else shapes):
        for name, fn in impls.items():
            if any(s in name for s in args.skip):
                continue
            for pass_ in ("fwd", "fwd+bwd"):
                reason = skip(shape, name, pass_) if skip else None
                if reason:
                    print(f"# {shape} {name} {pass_}: skipped ({reason})", file=sys.stderr)
                    continue
                # The reference loop is 10-100x slower: one warm-up and three samples are enough for the ratio.
                ms = time_ms(bench_case(fn, shape, dtype, pass_), "cpu",
                             warmup=1 if name == reference else 2, repeat=3 if name == reference else 9,
                             max_seconds=60.0 if name == reference else 20.0)
                gbs = floor_elements(shape, pass_) * 4 / (ms * 1e-3) / 1e9
                print(f"# {shape} {name} {pass_}: {ms:.2f} ms", file=sys.stderr, flush=True)
                rows.append(Row(op, "x".join(map(str, shape)), "float32", name, pass_, ms, gbs,
                                flops(shape, pass_) / (ms * 1e-3) / 1e9 if flops else None))
    print_table(rows, copy_gbs, baseline=reference)
    cmd = f"python bench/{script}" + (" --quick" if args.quick else "") + \
        (" --reuse-memory" if args.reuse_memory else "")
    name = f"{op}_cpu" + ("_quick" if args.quick else "") + ("_reuse" if args.reuse_memory else "")
    print("wrote", save(name, rows, copy_gbs, cmd))
    return rows
