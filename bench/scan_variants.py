"""Tuning sweep of the CUDA scan's tile shapes (kernels/cuda/scan.cu, `launch_scan_any`): each variant
(channels per thread VEC, steps per thread STEPS, blocks per multiprocessor MINB) runs in its own process
(MMREC_CUDA_SCAN_VARIANT is read once per process), checked against the float64 reference, then timed.

    python3 bench/scan_variants.py [--variants -1,0,1,...] [--out scan_variants.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

VARIANTS = {-1: "default", 0: "VEC4 STEPS8 MINB2", 1: "VEC4 STEPS8 MINB3", 2: "VEC4 STEPS8 MINB4",
            3: "VEC4 STEPS16 MINB2", 4: "VEC8 STEPS8 MINB2", 5: "VEC8 STEPS8 MINB3", 6: "VEC8 STEPS4 MINB4",
            7: "VEC4 STEPS4 MINB4"}
SHAPES = [(8, 4096, 1024), (1, 65536, 256)]


def child() -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cuda import DTYPES, make_pass, scan_case, time_ms

    import mmrec_ops
    from mmrec_ops import backends, reference
    backends.set_poison(False)
    rows = []
    for B, T, D in SHAPES:
        for dtype_name in ("float32", "bfloat16"):
            args, floor = scan_case(B, T, D, DTYPES[dtype_name])
            with backends.backend("cuda"), torch.no_grad():
                out = mmrec_ops.scan(*args)
            ref = reference.scan(*[a.double() if isinstance(a, torch.Tensor) else a for a in args])
            err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
            for which in ("fwd", "fwd+bwd"):
                ms = time_ms(make_pass(mmrec_ops.scan, args, which, "cuda"))
                rows.append({"shape": f"B={B} T={T} D={D}", "dtype": dtype_name, "pass": which, "ms": ms,
                             "floor_bytes": floor[which], "err": err})
            del out, ref
            torch.cuda.empty_cache()
    print("ROWS " + json.dumps(rows))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default=",".join(str(v) for v in VARIANTS))
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return 0
    results = {}
    for v in (int(x) for x in args.variants.split(",")):
        env = dict(os.environ, MMREC_CUDA_SCAN_VARIANT=str(v))
        proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True,
                              timeout=300)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROWS ")]
        if proc.returncode or not line:
            print(f"variant {v}: failed (rc {proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
            continue
        results[v] = json.loads(line[0][5:])
        for r in results[v]:
            print(f"variant {v:>2} {VARIANTS[v]:<20} {r['shape']:<20} {r['dtype']:<9} {r['pass']:<8} "
                  f"{r['ms']:8.3f} ms  err {r['err']:.1e}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
