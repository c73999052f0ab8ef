"""CPU/GPU `scan` against the reference loop and torch peers; prints a table and writes JSON.

    python bench/bench_scan.py                 # B=8, T=4096, D=1024 float32 and B=1, T=65536, D=256
    python bench/bench_scan.py --quick         # small shapes
    pytest bench --benchmark-only              # the same cases through pytest-benchmark
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

SHAPES = [(8, 4096, 1024), (1, 65536, 256)]
QUICK_SHAPES = [(4, 512, 256)]


def cumsum_scan(a, b, h0=None):
    """The closed form h_t = A_t * cumsum(b / A) with A = cumprod(a): one torch kernel per step, but it
    divides by a vanishing product (overflow/NaN once prod(a) underflows)."""
    A = torch.cumprod(a, dim=1)
    return A * torch.cumsum(b / A, dim=1)


_compiled_assoc = None


def associative_scan(a, b):
    global _compiled_assoc
    if _compiled_assoc is None:
        from torch._higher_order_ops.associative_scan import associative_scan as assoc

        def combine(x, y):
            return x[0] * y[0], y[0] * x[1] + y[1]

        _compiled_assoc = torch.compile(lambda a, b: assoc(combine, (a, b), dim=1, combine_mode="generic")[1])
    return _compiled_assoc(a, b)


def implementations(device: str) -> Dict[str, Callable]:
    impls = {}
    for name in ("cpu", "cuda", "triton"):
        if mmrec_ops.dispatch.serves(name, "scan", device):
            impls[f"mmrec-{name}"] = (lambda n: lambda a, b: _forced(n, a, b))(name)
    impls["reference (per-step loop)"] = lambda a, b: _forced("ref", a, b)
    impls["torch cumprod/cumsum"] = cumsum_scan
    impls["torch associative_scan (compiled)"] = associative_scan
    return impls


def _forced(name, a, b):
    with mmrec_ops.backend(name):
        return mmrec_ops.scan(a, b)


def make_inputs(shape: Tuple[int, int, int], device: str, dtype=torch.float32, grad=False):
    g = torch.Generator().manual_seed(0)
    a = (1 - 1e-4 * torch.rand(shape, generator=g)).to(device=device, dtype=dtype)  # cumprod stays normal
    b = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    if grad:
        a.requires_grad_(True)
        b.requires_grad_(True)
    return a, b


def bench_case(fn, shape, device, dtype, pass_: str):
    a, b = make_inputs(shape, device, dtype, grad=pass_ == "fwd+bwd")
    if pass_ == "fwd":
        def step():
            with torch.no_grad():
                fn(a, b)
    else:
        grad = torch.randn(shape, device=device, dtype=dtype)

        def step():
            a.grad = b.grad = None
            fn(a, b).backward(grad)
    return step


def main(argv=None) -> List[Row]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip", nargs="*", default=[], help="implementations to leave out (substring match)")
    args = p.parse_args(argv)
    device = args.device
    copy_gbs = copy_bandwidth_gbs(device)
    rows: List[Row] = []
    dtypes = [torch.float32] + ([torch.bfloat16] if device == "cuda" else [])
    for shape in (QUICK_SHAPES if args.quick else SHAPES):
        n = shape[0] * shape[1] * shape[2]
        for dtype in dtypes:
            for name, fn in implementations(device).items():
                if any(s in name for s in args.skip):
                    continue
                if name.startswith("reference") and n * (1 if args.quick else 1) > 8 * 4096 * 1024 + 1 and shape[1] > 10000:
                    continue  # 65,536 Python-level steps: minutes, and says nothing new
                for pass_ in ("fwd", "fwd+bwd"):
                    try:
                        ms = time_ms(bench_case(fn, shape, device, dtype, pass_), device,
                                     repeat=3 if name.startswith(("reference", "torch")) else 9)
                    except Exception as exc:  # a peer that does not run here is reported, not fatal
                        print(f"# {name} {pass_} {shape}: {type(exc).__name__}: {str(exc)[:120]}", file=sys.stderr)
                        continue
                    elems = 3 if pass_ == "fwd" else 8  # fwd reads a, b, writes h; bwd reads G, a, h, writes da, db
                    gbs = elems * n * torch.finfo(dtype).bits / 8 / (ms * 1e-3) / 1e9
                    rows.append(Row("scan", "x".join(map(str, shape)), str(dtype).replace("torch.", ""), name,
                                    pass_, ms, gbs))
    print_table(rows, copy_gbs, baseline="reference (per-step loop)")
    cmd = "python bench/bench_scan.py" + (" --quick" if args.quick else "")
    print("wrote", save(f"scan_{device}" + ("_quick" if args.quick else ""), rows, copy_gbs, cmd))
    return rows


if __name__ == "__main__":
    main()
