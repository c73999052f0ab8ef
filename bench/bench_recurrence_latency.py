"""Per-step latency of the CUDA recurrence (issue 16): forward, backward op alone, and fwd+bwd through autograd, in
ms and us per time step, float32 and bfloat16, at d = 64 (H = 12, D = 768) for B in {1, 4, 16} and T in
{1024, 16384}, and at B=16 T=1024 D=1024 H=8 (d = 128).

    python3 bench/bench_recurrence_latency.py [--out results.json] [--quick]

The `before` column holds the numbers of the kernels this replaced, measured on the H200 and quoted in issue 16
(`issues show 16`); '-' where the issue has none. Before timing, the float32 forward of every T=1024 case is
compared with the float64 reference (max|out-ref|/max|ref| < 1e-4).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cuda import make_pass, rand, time_ms  # noqa: E402

import mmrec_ops  # noqa: E402
from mmrec_ops import dispatch, outputs, reference  # noqa: E402

SHAPES = [(B, T, 768, 12) for T in (1024, 16384) for B in (1, 4, 16)] + [(16, 1024, 1024, 8)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Issue 16, H200, old kernels: (B, T, D, H, dtype, pass) -> ms.
BEFORE = {(16, 1024, 768, 12, "bfloat16", "fwd"): 1.64, (1, 16384, 768, 12, "bfloat16", "fwd"): 21.6,
          (1, 16384, 768, 12, "bfloat16", "bwd"): 26.3, (16, 1024, 1024, 8, "float32", "fwd"): 2.3,
          (16, 1024, 1024, 8, "float32", "fwd+bwd"): 7.0, (16, 1024, 1024, 8, "bfloat16", "fwd+bwd"): 7.45}


def case(B, T, D, H, dtype):
    d = D // H
    return (rand((B, T, D), dtype), rand((B, T, D), dtype, 0.5, 1.0), rand((H, d, d), dtype, -d ** -0.5, d ** -0.5),
            rand((D,), dtype, -0.3, 0.3), rand((B, D), dtype))


def bwd_pass(args):
    """The backward op alone (gate, reverse loop, dW/dbias reduction), given the forward's h."""
    z, gamma, w, bias, h0 = args
    with dispatch.backend("cuda"), torch.no_grad():
        h = mmrec_ops.recurrence(*args)
    grad = rand(h.shape, h.dtype)

    def run():
        with dispatch.backend("cuda"):
            return torch.ops.mmrec.recurrence_backward(grad, z, gamma, w, bias, h0, h, "cuda")
    return run


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--quick", action="store_true", help="float32 only")
    args = parser.parse_args()
    torch.manual_seed(0)
    outputs.set_poison(False)
    print(f"device: {torch.cuda.get_device_name()}", flush=True)
    rows: List[Dict] = []
    failures: List[str] = []
    for B, T, D, H in SHAPES:
        for dtype_name in (["float32"] if args.quick else list(DTYPES)):
            op_args = case(B, T, D, H, DTYPES[dtype_name])
            name = f"B={B} T={T} D={D} H={H}"
            if dtype_name == "float32" and T <= 1024:
                with dispatch.backend("cuda"), torch.no_grad():
                    out = mmrec_ops.recurrence(*op_args)
                ref = reference.recurrence(*[a.double() for a in op_args])
                err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
                ok = err < 1e-4
                print(f"  check {name}: max|cuda-ref|/max|ref| = {err:.2e} {'ok' if ok else 'FAIL'}", flush=True)
                if not ok:
                    failures.append(name)
                del out, ref
            passes = {"fwd": make_pass(mmrec_ops.recurrence, op_args, "fwd", "cuda"), "bwd": bwd_pass(op_args),
                      "fwd+bwd": make_pass(mmrec_ops.recurrence, op_args, "fwd+bwd", "cuda")}
            for which, fn in passes.items():
                ms = time_ms(fn)
                rows.append({"B": B, "T": T, "D": D, "H": H, "d": D // H, "dtype": dtype_name, "pass": which,
                             "ms": ms, "us_per_step": ms * 1e3 / T,
                             "before_ms": BEFORE.get((B, T, D, H, dtype_name, which))})
            del passes, op_args
            torch.cuda.empty_cache()
            print(f"  {name} {dtype_name} done", flush=True)
    print()
    print(f"{'shape':<28}{'d':>4}{'dtype':>10}{'pass':>9}{'ms':>10}{'us/step':>9}{'before ms':>11}{'x':>7}")
    for r in rows:
        before = r["before_ms"]
        b = f"{before:.2f}" if before else "-"
        x = f"{before / r['ms']:.1f}" if before else "-"
        print(f"{'B=%d T=%d D=%d H=%d' % (r['B'], r['T'], r['D'], r['H']):<28}{r['d']:>4}{r['dtype']:>10}"
              f"{r['pass']:>9}{r['ms']:>10.3f}{r['us_per_step']:>9.3f}{b:>11}{x:>7}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows, "failures": failures}, f, indent=1)
    if failures:
        print("bench_recurrence_latency: correctness FAILED for", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
