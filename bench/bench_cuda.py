"""CUDA benchmark of the four ops: the cuda backend against the reference loops (the `ref` backend) and, for
scan, torch's own closed form, per dtype and pass (fwd, fwd+bwd), with the memory-traffic floor of each call
(each input read once, each output written once, at the measured device copy bandwidth).

    python3 bench/bench_cuda.py [--out results.json] [--quick]

Times are medians of CUDA-event-timed runs (triton.testing.do_bench when triton is installed); impl `cuda` is the
op called from Python, `graph` the same call captured in a CUDA graph and replayed (device time alone). The reference
is timed with a few runs only (it takes up to seconds). Before timing, the cuda output of every float32 case
is compared with the reference (max|out-ref|/max|ref| < 1e-4).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch

import mmrec_ops
from mmrec_ops import dispatch, outputs, reference

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def event_ms(fn: Callable[[], object]) -> float:
    """Device time of one fn() call in ms, between two CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def time_ms(fn: Callable[[], object], budget_ms: float = 300.0, max_runs: int = 200) -> float:
    """Median time of fn() in ms, CUDA-event timed after one warm-up; stops after ~budget_ms."""
    try:
        from triton.testing import do_bench
        return float(do_bench(fn, warmup=25, rep=int(budget_ms), return_mode="median"))
    except ImportError:
        pass
    fn()
    torch.cuda.synchronize()
    samples: List[float] = []
    while len(samples) < max_runs and (sum(samples) < budget_ms or len(samples) < 3):
        samples.append(event_ms(fn))
    return statistics.median(samples)


def graphed(fn: Callable[[], object]) -> Callable[[], None]:
    """fn captured once in a CUDA graph (after two warm-up calls on a side stream): its replays time the kernels
    without the host's per-call work (Python, autograd, launches), as the trainer's CUDA graphs run them."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def time_slow_ms(fn: Callable[[], object], runs: int = 2) -> float:
    """For the reference loops: one warm-up, then the median of a few event-timed runs."""
    fn()
    torch.cuda.synchronize()
    return statistics.median(event_ms(fn) for _ in range(runs))


def copy_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    src = torch.rand(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), budget_ms=200)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def rand(shape, dtype, lo=-1.0, hi=1.0):
    return (torch.rand(shape, device="cuda", dtype=torch.float32) * (hi - lo) + lo).to(dtype)


# --------------------------------------------------------------------------- cases: args, bytes of the floor
def scan_case(B, T, D, dtype):
    args = (rand((B, T, D), dtype, 0.9, 1.0), rand((B, T, D), dtype), rand((B, D), dtype), False)
    e = torch.finfo(dtype).bits // 8
    n = B * T * D
    return args, {"fwd": 3 * n * e, "fwd+bwd": (3 + 5) * n * e}


def recurrence_case(B, T, D, H, dtype):
    d = D // H
    args = (rand((B, T, D), dtype), rand((B, T, D), dtype, 0.5, 1.0), rand((H, d, d), dtype, -d ** -0.5, d ** -0.5),
            rand((D,), dtype, -0.3, 0.3), rand((B, D), dtype))
    e = torch.finfo(dtype).bits // 8
    n = B * T * D
    return args, {"fwd": 3 * n * e, "fwd+bwd": (3 + 6) * n * e}


def mdi_case(N, B, T, D, dtype):
    args = (rand((B, T, D), dtype), rand((B, T, N), dtype, -3, 3), rand((N, D), dtype, -2, 4), rand((B, N, D), dtype),
            1e-6)
    e = torch.finfo(dtype).bits // 8
    n, nm = B * T * D, B * T * N * D
    return args, {"fwd": (n + nm) * e, "fwd+bwd": (n + nm + 2 * nm + 2 * n) * e}


def memory_update_case(B, NC, S, D, dtype):
    args = (rand((B, S, D), dtype), rand((B, NC, D), dtype, -2, 2), rand((B, NC, D), dtype), rand((B, NC), dtype, 0, 1))
    e = torch.finfo(dtype).bits // 8
    nm = B * (NC + 1) * S * D
    return args, {"fwd": nm * e, "fwd+bwd": 3 * nm * e}


def scan_torch(a, b, h0, reverse):
    """torch's closed form h_t = P_t (h0 + sum_{s<=t} b_s / P_s), P = cumprod(a): fast, unsafe where P underflows."""
    acc = torch.float32 if a.dtype != torch.float64 else torch.float64
    P = torch.cumprod(a.to(acc), 1)
    return (P * (h0.to(acc)[:, None] + torch.cumsum(b.to(acc) / P, 1))).to(a.dtype)


CASES = {
    "scan": [("B=8 T=4096 D=1024", scan_case, (8, 4096, 1024)), ("B=1 T=65536 D=256", scan_case, (1, 65536, 256))],
    "recurrence": [("B=16 T=1024 D=1024 H=8", recurrence_case, (16, 1024, 1024, 8))],
    "mdi": [("N=4 B=8 T=4096 D=1024", mdi_case, (4, 8, 4096, 1024))],
    # the second: the base model's slots at T=16,384, B=1 (chunk_len 64, 16 slots, d_model 768)
    "memory_update": [("B=16 NC=256 S=64 D=1024", memory_update_case, (16, 256, 64, 1024)),
                      ("B=1 NC=256 S=16 D=768", memory_update_case, (1, 256, 16, 768))],
}
OPS = {"scan": mmrec_ops.scan, "recurrence": mmrec_ops.recurrence, "mdi": mmrec_ops.mdi,
       "memory_update": mmrec_ops.memory_update}
TORCH_FORMS = {"scan": scan_torch}


def make_pass(fn: Callable, args, which: str, backend: str):
    """A closure running one pass: fwd (no autograd) or fwd+bwd (autograd to every tensor input)."""
    if which == "fwd":
        def run():
            with dispatch.backend(backend), torch.no_grad():
                return fn(*args)
        return run
    leaves = [a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args]
    with dispatch.backend(backend), torch.no_grad():
        out_shape, out_dtype = fn(*args).shape, args[0].dtype
    g = rand(out_shape, out_dtype)
    tensors = [x for x in leaves if isinstance(x, torch.Tensor)]

    def run():
        with dispatch.backend(backend):
            out = fn(*leaves)
            return torch.autograd.grad(out, tensors, g)
    return run


def profile_kernels(ops: List[str]) -> int:
    """Per-kernel device time of the cuda fwd+bwd pass of every case (float32 and bfloat16), 5 runs."""
    from torch.profiler import ProfilerActivity, profile
    for op in ops:
        for shape_name, make, dims in CASES[op]:
            for dtype_name, dtype in DTYPES.items():
                run = make_pass(OPS[op], make(*dims, dtype)[0], "fwd+bwd", "cuda")
                run()
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        run()
                    torch.cuda.synchronize()
                print(f"== {op} {shape_name} {dtype_name} fwd+bwd, 5 runs")
                print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8, max_name_column_width=70))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--quick", action="store_true", help="float32 only, no reference timing")
    parser.add_argument("--no-ref", action="store_true", help="both dtypes, no reference timing")
    parser.add_argument("--profile", action="store_true",
                        help="print the per-kernel CUDA times (torch.profiler) of each cuda fwd+bwd pass, no timing")
    parser.add_argument("--ops", default="scan,recurrence,mdi,memory_update")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.profile:
        return profile_kernels(args.ops.split(","))
    outputs.set_poison(False)
    copy_gbs = copy_bandwidth_gbs()
    print(f"device: {torch.cuda.get_device_name()}  copy bandwidth (read + write): {copy_gbs:.0f} GB/s", flush=True)
    rows: List[Dict] = []
    failures: List[str] = []
    dtypes = ["float32"] if args.quick else ["float32", "bfloat16"]
    for op in args.ops.split(","):
        for shape_name, make, dims in CASES[op]:
            for dtype_name in dtypes:
                t0 = time.perf_counter()
                op_args, floor_bytes = make(*dims, DTYPES[dtype_name])
                if dtype_name == "float32":  # correctness at the benchmark shape before any timing
                    with dispatch.backend("cuda"), torch.no_grad():
                        out = OPS[op](*op_args)
                    ref = getattr(reference, op)(*[a.double() if isinstance(a, torch.Tensor) else a for a in op_args])
                    err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
                    ok = err < 1e-4
                    print(f"  check {op} {shape_name}: max|cuda-ref|/max|ref| = {err:.2e} {'ok' if ok else 'FAIL'}",
                          flush=True)
                    if not ok:
                        failures.append(f"{op} {shape_name}")
                    del out, ref
                for which in ("fwd", "fwd+bwd"):
                    impls = {"cuda": time_ms(make_pass(OPS[op], op_args, which, "cuda"))}
                    try:
                        impls["graph"] = time_ms(graphed(make_pass(OPS[op], op_args, which, "cuda")))
                    except RuntimeError as err:  # a capture failure is reported, and the eager row stands
                        print(f"  {op} {shape_name} {dtype_name} {which}: no CUDA graph ({err})", flush=True)
                    if op in TORCH_FORMS and which == "fwd":
                        impls["torch"] = time_ms(lambda: TORCH_FORMS[op](*op_args))
                    if not args.quick and not args.no_ref:
                        impls["ref"] = time_slow_ms(make_pass(OPS[op], op_args, which, "ref"))
                    floor_ms = floor_bytes[which] / (copy_gbs * 1e9) * 1e3
                    for impl, ms in impls.items():
                        rows.append({"op": op, "shape": shape_name, "dtype": dtype_name, "pass": which, "impl": impl,
                                     "ms": ms, "floor_ms": floor_ms, "of_floor": floor_ms / ms,
                                     "speedup_vs_ref": (impls["ref"] / ms) if "ref" in impls else None})
                    torch.cuda.empty_cache()
                print(f"  {op} {shape_name} {dtype_name}: {time.perf_counter() - t0:.1f} s", flush=True)
    print()
    print(f"{'op':<14}{'shape':<26}{'dtype':<10}{'pass':<9}{'impl':<7}{'ms':>10}{'floor ms':>10}{'of floor':>9}"
          f"{'x ref':>9}")
    for r in rows:
        sp = f"{r['speedup_vs_ref']:.1f}" if r["speedup_vs_ref"] else "-"
        print(f"{r['op']:<14}{r['shape']:<26}{r['dtype']:<10}{r['pass']:<9}{r['impl']:<7}{r['ms']:>10.3f}"
              f"{r['floor_ms']:>10.3f}{100 * r['of_floor']:>8.0f}%{sp:>9}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "copy_gbs": copy_gbs, "rows": rows,
                       "failures": failures}, f, indent=1)
    if failures:
        print("bench_cuda: correctness FAILED for", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
