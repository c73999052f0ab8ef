"""Self-check of the CUDA kernels on the shapes the op tests do not reach: multi-chunk scans (the carry
workspace, both directions, vector and scalar paths), partial batch tiles and the global-memory W path of
recurrence, bank groups of mdi (N > 8), the global-state path of memory_update. Each case compares the cuda
backend's output and gradients with the float64 reference (autograd through mmrec_ops.reference) by
max|out - ref| / max|ref|, and checks bitwise-equal reruns.

    python3 bench/check_cuda.py             # full check, exits 1 on any failure
    python3 bench/check_cuda.py --small     # one tiny call per kernel (for compute-sanitizer)
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

import mmrec_ops
from mmrec_ops import dispatch, outputs, reference

TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2, torch.float64: 1e-9}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double(), ref.detach().double()
    if not torch.isfinite(out).all():
        return float("nan")
    return ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def rand(shape, dtype, lo=-1.0, hi=1.0, gen=None):
    x = torch.rand(shape, generator=gen, dtype=torch.float64, device="cuda") * (hi - lo) + lo
    return x.to(dtype)


def run_case(name, fn, ref_fn, args, dtype, grads=True, failures=None):
    """fn(*args) on the cuda backend vs ref_fn on float64 copies; gradients of <out, G> for every tensor arg."""
    t0 = time.perf_counter()
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    leaves = [a.detach().clone().requires_grad_(grads) if isinstance(a, torch.Tensor) else a for a in args]
    with dispatch.backend("cuda"):
        out = fn(*leaves)
        g = torch.randn(out.shape, device="cuda", dtype=torch.float64).to(dtype)
        got = torch.autograd.grad(out, [leaves[i] for i in tensors], g) if grads else []
        out2 = fn(*leaves)
        got2 = torch.autograd.grad(out2, [leaves[i] for i in tensors], g) if grads else []
    ref_args = [a.detach().double().requires_grad_(grads) if isinstance(a, torch.Tensor) else a for a in args]
    ref = ref_fn(*ref_args)
    want = torch.autograd.grad(ref, [ref_args[i] for i in tensors], g.double()) if grads else []
    errs = {"out": rel_err(out, ref)}
    for i, a, b in zip(tensors, got, want):
        errs[f"d{i}"] = rel_err(a, b)
    same = torch.equal(out, out2) and all(torch.equal(a, b) for a, b in zip(got, got2))
    tol = TOL[dtype] * (3 if grads and dtype == torch.float32 else 1)
    bad = [k for k, e in errs.items() if not e < tol] + ([] if same else ["rerun differs"])
    status = "ok" if not bad else "FAIL " + ",".join(bad)
    worst = max(errs.values())
    print(f"{status:<10} {name:<58} {str(dtype)[6:]:<9} worst {worst:.2e} (tol {tol:.0e})  {time.perf_counter() - t0:5.1f}s",
          flush=True)
    if bad and failures is not None:
        failures.append(name)


def scan_cases(small: bool):
    """(B, T, D, dtype, reverse, with_h0): every shape in float32 both ways; the other dtypes on a vector-path and
    a scalar-path shape; a multi-group scan without h0."""
    if small:
        # float32 over B*D = 4,420 channels: the streaming kernel on a GPU of up to 138 multiprocessors; bf16 over
        # 6,664 channels with D not a multiple of 4: the chunked kernel's one-channel path
        specs = [(2, 3, 8, torch.float32, False, True), (1, 70, 5, torch.float32, True, True),
                 (2, 150, 2210, torch.float32, True, True), (4, 150, 1666, torch.bfloat16, True, True)]
    else:
        shapes = [(2, 65, 1024), (3, 2049, 36), (1, 4099, 5), (1, 64 * 33, 128), (2, 64 * 64 + 1, 8), (4, 300, 257),
                  (8, 1000, 1024), (3, 5000, 1670)]
        specs = [(*shape, torch.float32, rev, True) for shape in shapes for rev in (False, True)]
        specs += [(*shape, dtype, rev, True) for shape in [(2, 65, 1024), (1, 64 * 33 + 7, 6)]
                  for dtype in (torch.bfloat16, torch.float16, torch.float64) for rev in (False, True)]
        specs += [(*shape, dtype, rev, True) for shape in [(8, 1000, 1024), (4, 3001, 1666)]
                  for dtype in (torch.bfloat16, torch.float16) for rev in (False, True)]  # 16-bit, wide
        specs += [(3, 2049, 36, torch.float32, rev, False) for rev in (False, True)]
    cases = []
    for B, T, D, dtype, reverse, with_h0 in specs:
        a = rand((B, T, D), dtype, 0.9, 1.0)
        b = rand((B, T, D), dtype)
        h0 = rand((B, D), dtype) if with_h0 else None
        cases.append((f"scan B={B} T={T} D={D} rev={reverse} h0={with_h0}", mmrec_ops.scan, reference.scan,
                      (a, b, h0, reverse), dtype))
    return cases


def recurrence_cases(small: bool):
    cases = []
    shapes = [(3, 5, 2, 8), (3, 5, 2, 32), (9, 5, 2, 64), (2, 5, 1, 128)] if small else [(5, 50, 8, 128), (16, 64, 8, 128), (2, 7, 1, 1024),
                                                           (3, 33, 3, 40), (1, 200, 4, 64)]
    # small: float32 and bfloat16, so the sanitizers see both the FMA and the tensor-core latency kernels (d = 32, 64
    # with a partial 8-row batch tile, 128)
    dtypes = [torch.float32, torch.bfloat16] if small else [torch.float32, torch.bfloat16, torch.float64]
    for B, T, H, d in shapes:
        for dtype in dtypes:
            if dtype == torch.float64 and d > 128:
                continue
            D = H * d
            z = rand((B, T, D), dtype)
            gamma = rand((B, T, D), dtype, 0.5, 1.0)
            w = rand((H, d, d), dtype, -1.0 / d ** 0.5, 1.0 / d ** 0.5)
            bias = rand((D,), dtype, -0.3, 0.3)
            h0 = rand((B, D), dtype)
            cases.append((f"recurrence B={B} T={T} H={H} d={d}", mmrec_ops.recurrence, reference.recurrence,
                          (z, gamma, w, bias, h0), dtype))
    if not small:
        B, T, H, d = 2, 9, 2, 16
        z, gamma = rand((B, T, H * d), torch.float32), rand((B, T, H * d), torch.float32, 0.5, 1.0)
        w = rand((H, d, d), torch.float32, -0.25, 0.25)
        cases.append(("recurrence no bias, no h0", mmrec_ops.recurrence, reference.recurrence,
                      (z, gamma, w, None, None), torch.float32))
    return cases


def mdi_cases(small: bool):
    cases = []
    shapes = [(2, 150, 3, 40)] if small else [(2, 40, 3, 300), (1, 37, 5, 64), (2, 20, 9, 33), (8, 100, 4, 1024),
                                              (1, 3, 17, 7), (2, 1000, 4, 130), (1, 300, 9, 70)]
    dtypes = [torch.float32] if small else [torch.float32, torch.bfloat16, torch.float64]
    for B, T, N, D in shapes:
        for dtype in dtypes:
            v = rand((B, T, D), dtype)
            mod = rand((B, T, N), dtype, -3, 3)
            base = rand((N, D), dtype, -2, 4)
            m0 = rand((B, N, D), dtype)
            cases.append((f"mdi B={B} T={T} N={N} D={D}", mmrec_ops.mdi, reference.mdi, (v, mod, base, m0, 1e-6), dtype))
    return cases


def memory_update_cases(small: bool):
    cases = []
    shapes = [(2, 3, 4, 40)] if small else [(3, 17, 8, 100), (2, 9, 64, 1024), (1, 5, 96, 1024), (4, 33, 3, 7),
                                              (2, 20, 13, 200)]
    dtypes = [torch.float32] if small else [torch.float32, torch.bfloat16, torch.float64]
    for B, NC, S, D in shapes:
        for dtype in dtypes:
            M0 = rand((B, S, D), dtype)
            key = rand((B, NC, D), dtype, -2, 2)
            value = rand((B, NC, D), dtype)
            strength = rand((B, NC), dtype, 0, 1)
            cases.append((f"memory_update B={B} NC={NC} S={S} D={D}", mmrec_ops.memory_update,
                          reference.memory_update, (M0, key, value, strength), dtype))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="one tiny call per kernel (sanitizer runs)")
    parser.add_argument("--ops", default="scan,recurrence,mdi,memory_update")
    args = parser.parse_args()
    if not torch.cuda.is_available() or "cuda" not in dispatch.built_backends():
        print("check_cuda: no CUDA device or the cuda backend is not built:", dispatch.why_not_built("cuda"))
        return 1
    torch.manual_seed(0)
    outputs.set_poison(True)
    failures = []
    makers = {"scan": scan_cases, "recurrence": recurrence_cases, "mdi": mdi_cases,
              "memory_update": memory_update_cases}
    for op in args.ops.split(","):
        for name, fn, ref_fn, op_args, dtype in makers[op](args.small):
            try:
                run_case(name, fn, ref_fn, op_args, dtype, failures=failures)
            except Exception as exc:  # a kernel error must not hide the other cases
                print(f"ERROR      {name} {dtype}: {type(exc).__name__}: {exc}", flush=True)
                failures.append(name)
    torch.cuda.synchronize()
    print(f"check_cuda: {len(failures)} failure(s)" + (": " + "; ".join(failures) if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
