"""CPU recurrence kernel vs the reference and vs the natural per-step PyTorch loop (torch.bmm per step).

    python bench/bench_recurrence.py [--quick] [--threads N] [--json bench/results/recurrence_cpu.json]
    pytest bench/bench_recurrence.py --benchmark-only

Forward and forward+backward in float32. GFLOP/s counts the matvec work only: forward 2 B T D d,
forward+backward 8 B T D d (the backward recomputes W h, and computes W^T e and dW).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

import mmrec_ops
from mmrec_ops import dispatch, reference

SHAPES = [dict(B=1, T=256, D=512, H=4), dict(B=8, T=1024, D=512, H=8)]
QUICK_SHAPES = [dict(B=1, T=64, D=512, H=4), dict(B=8, T=128, D=512, H=8)]


def torch_loop(z, gamma, w, bias=None, h0=None):
    """The per-step PyTorch loop one would write: one bmm over heads, then the gate, T times."""
    B, T, D = z.shape
    H, d, _ = w.shape
    h = z.new_zeros(B, D) if h0 is None else h0
    w_t = w.transpose(1, 2)  # [H, d, d]: h^k @ w[k]^T = (w[k] @ h^k)^T
    out = []
    for t in range(T):
        p = torch.bmm(h.view(B, H, d).transpose(0, 1), w_t).transpose(0, 1).reshape(B, D)
        if bias is not None:
            p = p + bias
        h = z[:, t] * torch.sigmoid(p) + gamma[:, t] * h
        out.append(h)
    return torch.stack(out, 1)


def cpu_kernel(*args):
    with dispatch.backend("cpu"):
        return mmrec_ops.recurrence(*args)


IMPLS: Dict[str, Callable] = {"cpu": cpu_kernel, "reference": reference.recurrence, "torch_loop": torch_loop}


def make_inputs(B, T, D, H, dtype=torch.float32, seed=0):
    d = D // H
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(B, T, D, generator=g) * 2 - 1
    gamma = torch.rand(B, T, D, generator=g) * 0.5 + 0.5
    w = (torch.rand(H, d, d, generator=g) * 2 - 1) / d ** 0.5
    bias = torch.rand(D, generator=g) * 0.2 - 0.1
    h0 = torch.rand(B, D, generator=g) * 2 - 1
    return [x.to(dtype) for x in (z, gamma, w, bias, h0)]


def step_fn(impl: Callable, inputs: List[torch.Tensor], backward: bool) -> Callable[[], None]:
    if not backward:
        def fwd():
            with torch.no_grad():
                impl(*inputs)
        return fwd
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    grad = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(1), dtype=inputs[0].dtype)

    def fwd_bwd():
        for x in leaves:
            x.grad = None
        impl(*leaves).backward(grad)
    return fwd_bwd


def time_ms(fn: Callable[[], None], repeats: int, budget_s: float) -> float:
    """Median wall time in ms of up to `repeats` calls after one warm-up, stopping once budget_s is spent;
    a warm-up slower than budget_s / 4 (the loops at T = 1024) is itself the one measurement."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > budget_s / 4:
        return first * 1e3
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def flops(shape, backward: bool) -> float:
    B, T, D, H = shape["B"], shape["T"], shape["D"], shape["H"]
    return (8 if backward else 2) * B * T * D * (D // H)


def run(shapes, impls, repeats: int, budget_s: float) -> List[dict]:
    rows = []
    for shape in shapes:
        inputs = make_inputs(**shape)
        for backward in (False, True):
            row = dict(shape, pass_="fwd+bwd" if backward else "fwd", ms={})
            for name in impls:
                row["ms"][name] = time_ms(step_fn(IMPLS[name], inputs, backward), repeats, budget_s)
            row["cpu_gflops"] = flops(shape, backward) / row["ms"]["cpu"] / 1e6
            row["speedup"] = {n: row["ms"][n] / row["ms"]["cpu"] for n in impls if n != "cpu"}
            rows.append(row)
    return rows


def print_table(rows: List[dict], impls) -> None:
    others = [n for n in impls if n != "cpu"]
    head = f"{'B':>3} {'T':>5} {'D':>4} {'H':>2} {'pass':>8} " + " ".join(f"{n + ' ms':>14}" for n in impls)
    head += f" {'cpu GFLOP/s':>12} " + " ".join(f"{'x vs ' + n:>14}" for n in others)
    print(head)
    for r in rows:
        line = f"{r['B']:>3} {r['T']:>5} {r['D']:>4} {r['H']:>2} {r['pass_']:>8} "
        line += " ".join(f"{r['ms'][n]:>14.3f}" for n in impls)
        line += f" {r['cpu_gflops']:>12.2f} " + " ".join(f"{r['speedup'][n]:>14.1f}" for n in others)
        print(line)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short sequences, few repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--note", default="", help="stored in the JSON (e.g. the machine's load)")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "recurrence_cpu.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    repeats = args.repeats or (3 if args.quick else 10)
    impls = list(IMPLS)
    rows = run(shapes, impls, repeats, budget_s=5.0 if args.quick else 60.0)
    print_table(rows, impls)
    result = dict(op="recurrence", backend="cpu", dtype="float32", quick=args.quick, threads=torch.get_num_threads(),
                  machine=platform.processor() or platform.machine(), torch=torch.__version__,
                  load_average=os.getloadavg()[0], note=args.note, metric="median wall ms", rows=rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.json}")


# pytest-benchmark: pytest bench/bench_recurrence.py --benchmark-only
try:
    import pytest

    @pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{B}-T{T}-D{D}-H{H}".format(**s))
    @pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
    @pytest.mark.parametrize("impl", list(IMPLS))
    def test_recurrence_cpu(benchmark, impl, backward, shape):
        benchmark.extra_info.update(shape, gflop=flops(shape, backward) / 1e9)
        benchmark.pedantic(step_fn(IMPLS[impl], make_inputs(**shape), backward), rounds=5, warmup_rounds=1)
except ImportError:
    pass


if __name__ == "__main__":
    main()
