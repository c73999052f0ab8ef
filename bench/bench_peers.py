"""mmrec's cuda and triton backends side by side with the peers, in one run on one GPU, at the shapes of the
CUDA issue: scan (accelerated-scan's Triton `scalar` and CUDA `warp` kernels, flash-linear-attention's HGRN
`chunk_hgrn` / `fused_recurrent_hgrn`, torch's compiled `associative_scan`) and recurrence (cuDNN LSTM/GRU,
FlashRNN elman/gru with 8 heads of 128). Peers run on their native layouts and argument forms (inputs prepared
outside the timed region): accelerated-scan takes [B, D, T], HGRN takes log gates. Each peer's scan output is
compared with mmrec's on the same values before it is timed.

    python3 bench/bench_peers.py [--out peers.json] [--skip flashrnn,warp]

Peers are optional: a missing package gives a row "absent"; a peer that fails gives its error, and the run
goes on. Pure-Python wheels of the peers travel to the GPU machine (see bench/results/device/README.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cuda import copy_bandwidth_gbs, make_pass, rand, recurrence_case, scan_case, time_ms  # noqa: E402

import mmrec_ops  # noqa: E402
from mmrec_ops import outputs  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def grad_pass(fn: Callable, inputs: List[torch.Tensor], which: str) -> Callable[[], object]:
    """fwd: fn(*inputs) without autograd; fwd+bwd: gradients of <fn(...), G> to every input."""
    if which == "fwd":
        def run_fwd():
            with torch.no_grad():
                return fn(*inputs)
        return run_fwd
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    with torch.no_grad():
        out = fn(*inputs)
    g = torch.randn_like(out)

    def run():
        return torch.autograd.grad(fn(*leaves), leaves, g)
    return run


def rel_diff(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


# ------------------------------------------------------------------------------------------- scan peers
def scan_peers(a: torch.Tensor, b: torch.Tensor, which: str, skip: set) -> Dict[str, Callable]:
    """a, b: [B, T, D]. Returns name -> builder() -> (run, check diff vs mmrec or None)."""
    mine = mmrec_ops.scan(a, b)  # [B, T, D], no h0
    peers: Dict[str, Callable] = {}

    def accel(module_name: str):
        def build():
            mod = __import__(f"accelerated_scan.{module_name}", fromlist=["scan"])
            at, bt = a.transpose(1, 2).contiguous(), b.transpose(1, 2).contiguous()  # [B, D, T]
            diff = rel_diff(mod.scan(at, bt).transpose(1, 2), mine)
            return grad_pass(mod.scan, [at, bt], which), diff
        return build

    peers["accel-scan triton"] = accel("scalar")
    if "warp" not in skip:
        if a.dtype == torch.bfloat16:  # H100, torch 2.11: the forward too (bench/results/peers/README.md)
            peers["accel-scan warp"] = "skipped: bf16 fails with an illegal memory access (loses the CUDA context)"
        else:
            peers["accel-scan warp"] = accel("warp")

    def hgrn(name: str):
        def build():
            from fla.ops import hgrn as fla_hgrn
            fn = getattr(fla_hgrn, name)
            g = a.float().log().to(a.dtype)  # h_t = exp(g_t) h_{t-1} + x_t
            diff = rel_diff(fn(b, g)[0], mine)
            return grad_pass(lambda x, gg: fn(x, gg)[0], [b, g], which), diff
        return build

    peers["fla chunk_hgrn"] = hgrn("chunk_hgrn")
    peers["fla fused_recurrent_hgrn"] = hgrn("fused_recurrent_hgrn")

    def torch_assoc():
        from torch._higher_order_ops.associative_scan import associative_scan

        def combine(left, right):  # (a, h) pairs: right after left
            return right[0] * left[0], right[0] * left[1] + right[1]

        torch._dynamo.reset()  # a fresh cache per case: shapes, dtypes and grad modes would pass the recompile limit
        compiled = torch.compile(lambda aa, bb: associative_scan(combine, (aa, bb), dim=1, combine_mode="pointwise")[1],
                                 fullgraph=True, dynamic=False)
        diff = rel_diff(compiled(a, b), mine)
        return grad_pass(compiled, [a, b], which), diff

    if "torch" not in skip and which == "fwd":  # its compiled backward took 560 ms a call and 100 s to compile
        peers["torch associative_scan (compiled)"] = torch_assoc
    return peers


# ------------------------------------------------------------------------------------- recurrence peers
def recurrence_peers(B: int, T: int, D: int, H: int, dtype: torch.dtype, which: str, skip: set) -> Dict[str, Callable]:
    peers: Dict[str, Callable] = {}

    def cudnn(kind: str):
        def build():
            rnn = getattr(torch.nn, kind)(D, D, 1, batch_first=True).to(device="cuda", dtype=dtype)
            x = rand((B, T, D), dtype)
            return grad_pass(lambda xx: rnn(xx)[0], [x], which), None
        return build

    peers["cuDNN LSTM (dense 1024)"] = cudnn("LSTM")
    peers["cuDNN GRU (dense 1024)"] = cudnn("GRU")

    def flashrnn(function: str, gates: int):
        def build():
            import importlib

            from flashrnn import flashrnn as frnn
            frnn_module = importlib.import_module("flashrnn.flashrnn.flashrnn")  # the attribute is the function
            # FlashRNN's gpu_info extension reads cudaDeviceProp fields that CUDA 13 removed (clockRate, ...) and
            # does not compile there; the four properties its kernels use come from torch instead.
            props = torch.cuda.get_device_properties()
            info = {"maxThreadsPerBlock": getattr(props, "max_threads_per_block", 1024),
                    "regsPerMultiprocessor": getattr(props, "regs_per_multiprocessor", 65536),
                    "multiProcessorCount": props.multi_processor_count,
                    "sharedMemPerBlockOptin": getattr(props, "shared_memory_per_block_optin", 232448)}
            frnn_module.get_gpu_info = lambda device_id: info
            d = D // H
            wx = rand((B, T, gates, H, d), dtype)
            r = rand((gates, H, d, d), dtype, -d ** -0.5, d ** -0.5)
            bias = rand((gates, H, d), dtype, -0.1, 0.1)
            dtype_name = {torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]

            def fn(wx_, r_, b_):
                return frnn(Wx=wx_, R=r_, b=b_, function=function, backend="cuda_fused", dtype=dtype_name)[0]
            return grad_pass(fn, [wx, r, bias], which), None
        return build

    if "flashrnn" not in skip:
        peers["FlashRNN elman (8x128)"] = flashrnn("elman", 1)
        peers["FlashRNN gru (8x128)"] = flashrnn("gru", 3)
    return peers


# ----------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--skip", default="", help="comma list of: warp, flashrnn, torch, triton")
    parser.add_argument("--ops", default="scan,recurrence")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.manual_seed(0)
    outputs.set_poison(False)
    copy_gbs = copy_bandwidth_gbs()
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  copy (read + write): {copy_gbs:.0f} GB/s",
          flush=True)
    mine = ["cuda"] + ([] if "triton" in skip else ["triton"])
    tasks = []
    if "scan" in args.ops:
        for shape, dtypes in (((8, 4096, 1024), ("float32", "bfloat16")), ((1, 65536, 256), ("float32",))):
            for dt in dtypes:
                for which in ("fwd", "fwd+bwd"):
                    tasks.append(("scan", shape, dt, which))
    if "recurrence" in args.ops:
        for dt in ("bfloat16", "float32"):
            tasks.append(("recurrence", (16, 1024, 1024, 8), dt, "fwd+bwd"))
    rows: List[Dict] = []
    for op, shape, dt, which in tasks:
        dtype = DTYPES[dt]
        if op == "scan":
            op_args, floor = scan_case(*shape, dtype)
            label = "B={} T={} D={}".format(*shape)
        else:
            op_args, floor = recurrence_case(*shape, dtype)
            label = "B={} T={} D={} H={}".format(*shape)
        impls: Dict[str, object] = {f"mmrec {b}": b for b in mine}
        if op == "scan":
            impls.update(scan_peers(op_args[0], op_args[1], which, skip))
        else:
            impls.update(recurrence_peers(*shape, dtype, which, skip))
        results: Dict[str, Dict] = {}
        for name, impl in impls.items():
            t0 = time.perf_counter()
            row = {"op": op, "shape": label, "dtype": dt, "pass": which, "impl": name, "ms": None, "diff": None,
                   "note": ""}
            try:
                if isinstance(impl, str) and impl.startswith("skipped"):
                    row["note"] = impl
                elif isinstance(impl, str):  # an mmrec backend
                    call_args = op_args if op == "recurrence" else (op_args[0], op_args[1])
                    row["ms"] = time_ms(make_pass(getattr(mmrec_ops, op), call_args, which, impl))
                else:
                    run, diff = impl()
                    row["diff"] = diff
                    row["ms"] = time_ms(run)
            except ImportError as exc:
                row["note"] = f"absent ({exc.name or exc})"
            except Exception as exc:  # a peer's failure is a result, not the end of the run
                row["note"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                traceback.print_exc(limit=2)
                if "illegal memory access" in str(exc):
                    rows.append(row)
                    print("CUDA context lost; stopping", flush=True)
                    return finish(rows, copy_gbs, args.out, lost=True)
            row["setup_s"] = round(time.perf_counter() - t0, 1)
            if row["ms"] is not None and op == "scan":  # every scan impl reads a, b and writes h at least once
                row["gbs"] = floor[which] / (row["ms"] * 1e-3) / 1e9
                row["of_copy"] = row["gbs"] / copy_gbs
            results[name] = row
            rows.append(row)
            print(f"  {op} {label} {dt} {which} {name}: "
                  f"{'%.3f ms' % row['ms'] if row['ms'] is not None else row['note']}"
                  f"{'' if row['diff'] is None else '  diff vs mmrec %.1e' % row['diff']}  ({row['setup_s']} s)",
                  flush=True)
            torch.cuda.empty_cache()
        base = results.get("mmrec cuda", {}).get("ms")
        for row in results.values():
            row["cuda_speedup"] = (row["ms"] / base) if (base and row["ms"]) else None
    return finish(rows, copy_gbs, args.out)


def finish(rows: List[Dict], copy_gbs: float, out: Optional[str], lost: bool = False) -> int:
    print()
    print(f"{'op':<11}{'shape':<24}{'dtype':<10}{'pass':<9}{'impl':<36}{'ms':>9}{'GB/s':>8}{'of copy':>9}"
          f"{'cuda x':>8}  note")
    for r in rows:
        ms = f"{r['ms']:.3f}" if r["ms"] is not None else "-"
        gbs = f"{r['gbs']:.0f}" if r.get("gbs") else "-"
        frac = f"{100 * r['of_copy']:.0f}%" if r.get("of_copy") else "-"
        sp = f"{r['cuda_speedup']:.2f}" if r.get("cuda_speedup") else "-"
        note = r["note"] or ("" if r["diff"] is None else f"diff vs mmrec {r['diff']:.1e}")
        print(f"{r['op']:<11}{r['shape']:<24}{r['dtype']:<10}{r['pass']:<9}{r['impl']:<36}{ms:>9}{gbs:>8}{frac:>9}"
              f"{sp:>8}  {note}")
    print("cuda x = the impl's time / mmrec cuda's time (above 1: mmrec cuda is faster)")
    if out:
        Path(out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                         "copy_gbs": copy_gbs, "rows": rows, "context_lost": lost}, indent=1))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
