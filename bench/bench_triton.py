"""Times each mmrec op on the `triton` backend, and on `cuda` beside it where that backend serves the op:
forward and forward+backward, median of triton.testing.do_bench (ms). Writes one JSON file of rows to
$OUT (device runs) or bench/results/.

    python bench/bench_triton.py [--ops scan,mdi] [--backends triton,cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import triton
import triton.testing

import mmrec_ops
from mmrec_ops import dispatch

# (op, dtype, sizes); the scan float32 row has a goal: forward <= 0.170 ms on an H100.
CASES = [
    ("scan", torch.float32, dict(B=8, T=4096, D=1024)),
    ("scan", torch.bfloat16, dict(B=8, T=4096, D=1024)),
    ("scan", torch.float32, dict(B=1, T=16384, D=256)),
    ("recurrence", torch.float32, dict(B=16, T=1024, D=1024, H=8)),
    ("recurrence", torch.bfloat16, dict(B=16, T=1024, D=1024, H=8)),
    ("mdi", torch.float32, dict(N=4, B=8, T=4096, D=1024)),
    ("mdi", torch.bfloat16, dict(N=4, B=8, T=4096, D=1024)),
    ("memory_update", torch.float32, dict(B=16, NC=256, S=64, D=1024)),
    ("memory_update", torch.bfloat16, dict(B=16, NC=256, S=64, D=1024)),
]
GOALS_MS = {("scan", "float32", (8, 4096, 1024), "fwd"): 0.170}


def make_args(op: str, dtype: torch.dtype, sz: dict, device: str):
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*shape, lo=-1.0, hi=1.0):
        x = torch.rand(shape, generator=gen, device=device, dtype=torch.float32) * (hi - lo) + lo
        return x.to(dtype).requires_grad_(True)

    if op == "scan":
        B, T, D = sz["B"], sz["T"], sz["D"]
        return (rand(B, T, D, lo=0.5, hi=1.0), rand(B, T, D), rand(B, D), False)
    if op == "recurrence":
        B, T, D, H = sz["B"], sz["T"], sz["D"], sz["H"]
        d = D // H
        return (rand(B, T, D), rand(B, T, D, lo=0.5, hi=1.0), rand(H, d, d, lo=-d ** -0.5, hi=d ** -0.5),
                rand(D, lo=-0.1, hi=0.1), rand(B, D))
    if op == "mdi":
        N, B, T, D = sz["N"], sz["B"], sz["T"], sz["D"]
        return (rand(B, T, D), rand(B, T, N, lo=-3, hi=3), rand(N, D, lo=-2, hi=4), rand(B, N, D), 1e-6)
    if op == "memory_update":
        B, NC, S, D = sz["B"], sz["NC"], sz["S"], sz["D"]
        return (rand(B, S, D), rand(B, NC, D, lo=-2, hi=2), rand(B, NC, D), rand(B, NC, lo=0, hi=1))
    raise ValueError(op)


def bench_one(backend: str, op: str, args) -> dict:
    """Forces `backend` through MMREC_BACKEND: `with mmrec_ops.backend()` is a context variable, which autograd's
    CUDA worker thread (where backward runs) does not see."""
    fn = getattr(mmrec_ops, op)
    tensors = [x for x in args if isinstance(x, torch.Tensor)]
    previous = os.environ.get("MMREC_BACKEND")
    os.environ["MMREC_BACKEND"] = backend
    try:
        return _time(fn, args, tensors)
    finally:
        if previous is None:
            del os.environ["MMREC_BACKEND"]
        else:
            os.environ["MMREC_BACKEND"] = previous


def _time(fn, args, tensors) -> dict:
    with torch.no_grad():
        fwd = triton.testing.do_bench(lambda: fn(*args), return_mode="median")
    grad = torch.randn_like(fn(*args))

    def fwd_bwd():
        torch.autograd.backward(fn(*args), grad)

    fwd_bwd_ms = triton.testing.do_bench(fwd_bwd, grad_to_none=tensors, return_mode="median")
    return {"fwd_ms": fwd, "fwd_bwd_ms": fwd_bwd_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default=",".join(dispatch.OPS))
    parser.add_argument("--backends", default="triton,cuda")
    parser.add_argument("--out", default=None, help="JSON path (default: $OUT/bench_triton.json or bench/results/)")
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_triton.py needs a CUDA device")
    ops = opts.ops.split(",")
    rows = []
    for op, dtype, sz in CASES:
        if op not in ops:
            continue
        args = make_args(op, dtype, sz, "cuda")
        for name in opts.backends.split(","):
            if not dispatch.serves(name, op, "cuda"):
                print(f"{op:14s} {name:7s} not served here ({dispatch.why_not_built(name) or 'no kernel'})")
                continue
            try:
                res = bench_one(name, op, args)
            except Exception as exc:  # a failing backend is reported, the others still run
                res = {"error": f"{type(exc).__name__}: {exc}"}
            row = {"op": op, "dtype": str(dtype).replace("torch.", ""), "sizes": sz, "backend": name, **res}
            goal = GOALS_MS.get((op, row["dtype"], tuple(sz.values()), "fwd"))
            if goal is not None and "fwd_ms" in res:
                row["fwd_goal_ms"] = goal
                row["fwd_goal_met"] = res["fwd_ms"] <= goal
            rows.append(row)
            timing = (f"fwd {res['fwd_ms']:.3f} ms  fwd+bwd {res['fwd_bwd_ms']:.3f} ms" if "fwd_ms" in res
                      else res["error"])
            print(f"{op:14s} {row['dtype']:9s} {name:7s} {sz}  {timing}", flush=True)
        del args
        torch.cuda.empty_cache()
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = Path(opts.out) if opts.out else (Path(os.environ["OUT"]) / "bench_triton.json" if os.environ.get("OUT")
                                            else Path(__file__).parent / "results" / "bench_triton.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
