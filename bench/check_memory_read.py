"""On a CUDA device: memory_read's cuda and triton backends against the float64 reference (r, m_last and all
gradients; max|out-ref|/max|ref|), then fwd and fwd+bwd times against the unfused path (mdi materialising
[B, T, N, D], then the read in PyTorch) and a memory-traffic floor (inputs read once, r written once).
    python bench/check_memory_read.py [--B 8 --T 2048 --D 768 --heads 12 --N 4 --S 16 --C 64]
--chunk L sets the triton backend's forward time chunk (tokens per program); --sweep times the triton backend at
several (chunk, warps) pairs of the forward kernel and (tokens, warps) pairs of the backward kernel after the check
(each compiles anew), --bank-sweep at several (channels, warps) of the bank backward;
--profile prints the CUDA kernels of one triton fwd+bwd; --skip-check times only. The floor's bandwidth is a device copy measured in the same run."""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

import mmrec_ops
from mmrec_ops import reference


def unfused(q, h, v, mod, base, Ms, m0, k0, C, Hr, eps, ne):
    m = mmrec_ops.mdi(v, mod, base, m0, eps)                                 # [B, T, N, D]
    B, T, D = q.shape
    N, L, S, dh = base.shape[0], Ms.shape[1], Ms.shape[2], D // Hr
    rms = lambda x: x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + ne).to(x.dtype)  # noqa: E731
    to_c = lambda x: F.pad(x, (0, 0) * (x.dim() - 2) + (k0, L * C - k0 - T)).view(B, L, C, *x.shape[2:])  # noqa: E731
    from_c = lambda x: x.reshape(B, L * C, *x.shape[3:])[:, k0:k0 + T]  # noqa: E731
    qh, nh = q.view(B, T, Hr, dh), rms(h.view(B, T, Hr, dh))
    nm, nM = rms(m.view(B, T, N, Hr, dh)), rms(Ms.reshape(B, L, S, Hr, dh))
    score = torch.cat([(qh * nh).sum(-1, keepdim=True), torch.einsum("bthd,btnhd->bthn", qh, nm),
                       from_c(torch.einsum("blchd,blshd->blchs", to_c(qh), nM))], -1)
    w_h, w_m, w_M = torch.softmax(score / math.sqrt(dh), -1).split([1, N, S], -1)
    r = w_h * nh + torch.einsum("bthn,btnhd->bthd", w_m, nm) + from_c(
        torch.einsum("blchs,blshd->blchd", to_c(w_M), nM))
    return r.reshape(B, T, D), m[:, -1]


def inputs(B, T, D, N, S, C, dtype, seed=0, k0=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    L = -(-(k0 + T) // C)
    rn = lambda *s: torch.randn(*s, generator=g, device="cuda", dtype=torch.float32)  # noqa: E731
    xs = [rn(B, T, D), rn(B, T, D), rn(B, T, D), 2 * rn(B, T, N), 1 + rn(N, D), rn(B, L, S, D), rn(B, N, D)]
    return [x.to(dtype).requires_grad_() for x in xs]


def rel(a, b):
    a, b = a.double(), b.double()
    return float("nan") if not torch.isfinite(a).all() else ((a - b).abs().max() / b.abs().max()).item()


def check(backends, dtypes):
    B, T, D, N, S, Hr = 2, 77, 96, 3, 5, 3
    for k0, C in ((0, 16), (3, 5)):
        print(f"accuracy vs float64 reference (B={B} T={T} D={D} N={N} S={S} C={C} k0={k0} heads={Hr})")
        _check_one(backends, dtypes, B, T, D, N, S, Hr, k0, C)


def _check_one(backends, dtypes, B, T, D, N, S, Hr, k0, C):
    cfg = (k0, C, Hr, 1e-6, 1e-6)
    for dtype in dtypes:
        xs = inputs(B, T, D, N, S, C, dtype, k0=k0)
        ys = [x.detach().double().requires_grad_() for x in xs]
        wr, wm = reference.memory_read(*ys, *cfg)
        gr, gm = torch.randn_like(wr), torch.randn_like(wm)
        want = torch.autograd.grad((wr, wm), ys, (gr, gm))
        for be in backends:
            with mmrec_ops.backend(be):
                r, m = mmrec_ops.memory_read(*xs, *cfg)
                got = torch.autograd.grad((r, m), xs, (gr.to(dtype), gm.to(dtype)))
            errs = [rel(r, wr), rel(m, wm)] + [rel(a, b) for a, b in zip(got, want)]
            names = "r m_last dq dh dv dmod dbase dMs dm0".split()
            print(f"  {be:6s} {str(dtype):15s} " + " ".join(f"{n}={e:.1e}" for n, e in zip(names, errs)))


def timed(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def bench(a, backends):
    dtype = torch.bfloat16
    B, T, D, N, S, C, Hr = a.B, a.T, a.D, a.N, a.S, a.C, a.heads
    cfg = (0, C, Hr, 1e-6, 1e-6)
    xs = inputs(B, T, D, N, S, C, dtype)
    nbytes = sum(x.numel() for x in xs) * xs[0].element_size() + B * T * D * xs[0].element_size()
    src = torch.empty(2**28, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_bw = 2 * src.numel() / (timed(lambda: dst.copy_(src)) * 1e-3)      # bytes read + written per second
    floor_ms = nbytes / copy_bw * 1e3
    print(f"\ntiming bf16 B={B} T={T} D={D} N={N} S={S} C={C} heads={Hr} on {torch.cuda.get_device_name()}; "
          f"device copy {copy_bw / 1e9:.0f} GB/s; traffic floor {nbytes / 2**20:.1f} MiB = {floor_ms:.3f} ms")
    print(f"  {'path':22s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'floor/fwd':>10s} {'floor/fwd+bwd':>14s}")
    paths = {f"fused/{be}": (lambda be=be: _run(be, mmrec_ops.memory_read, xs, cfg)) for be in backends}
    paths["unfused mdi+read"] = lambda: _run(None, unfused, xs, cfg)
    if "triton" in backends and a.sweep:
        for chunk, warps in ((16, 1), (32, 1), (64, 1), (32, 2)):
            paths[f"triton fwd L={chunk} w{warps}"] = lambda c=chunk, w=warps: _tuned(dict(MR_CHUNK=c, MR_WARPS=w),
                                                                                      xs, cfg)
        for tiles in ((16, 2), (16, 4), (16, 8), (32, 4), (32, 8), (64, 8)):   # each kept by _mr_bwd_tiles here
            paths["triton bwd L={} w{}".format(*tiles)] = lambda tiles=tiles: _tuned(dict(MR_BWD=tiles), xs, cfg)
    if "triton" in backends and a.bank_sweep:
        for tiles in ((32, 1), (64, 1), (128, 1), (128, 2), (256, 2), (256, 4)):
            paths["triton bank bwd {}c w{}".format(*tiles)] = lambda tiles=tiles: _tuned(dict(MR_BANK_BWD=tiles),
                                                                                          xs, cfg)
    for name, make in paths.items():
        fwd_fn, both_fn = make()
        try:
            fwd, both = timed(fwd_fn), timed(both_fn)
        except Exception as err:  # a sweep configuration that does not compile (resources) is reported, not fatal
            print(f"  {name:22s} failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            continue
        print(f"  {name:22s} {fwd:9.3f} {both:11.3f} {floor_ms / fwd:10.3f} {floor_ms / both:14.3f}")
    if a.profile and "triton" in backends:
        both = paths["fused/triton"]()[1]
        both()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                both()
            torch.cuda.synchronize()
        print("\nCUDA kernels of 5 triton fwd+bwd calls (us per call):")
        rows = sorted(((e.key, e.device_time_total / 5) for e in prof.key_averages() if e.device_time_total > 0),
                      key=lambda kv: -kv[1])
        for key, us in rows[:14]:
            print(f"  {us:9.1f}  {key[:90]}")


def _run(be, fn, xs, cfg):
    def fwd():
        with torch.no_grad():
            return fn(*xs, *cfg)

    def both():
        r, m = fn(*xs, *cfg)
        return torch.autograd.grad(r.float().sum() + m.float().sum(), xs)

    if be is None:
        return fwd, both
    return (lambda: _with(be, fwd)), (lambda: _with(be, both))


def _tuned(overrides, xs, cfg):
    """The triton backend's (fwd, fwd+bwd) with module settings of mmrec_ops.backends.triton replaced during each
    call: {name: value} (MR_CHUNK, MR_WARPS, MR_BWD, MR_BANK_BWD), restored afterwards."""
    from mmrec_ops.backends import triton as triton_backend
    fwd, both = _run("triton", mmrec_ops.memory_read, xs, cfg)

    def tuned(f):
        def g():
            saved = {name: getattr(triton_backend, name) for name in overrides}
            for name, value in overrides.items():
                setattr(triton_backend, name, value)
            try:
                return f()
            finally:
                for name, value in saved.items():
                    setattr(triton_backend, name, value)
        return g
    return tuned(fwd), tuned(both)


def _with(be, f):
    with mmrec_ops.backend(be):
        return f()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for k, v in dict(B=8, T=2048, D=768, heads=12, N=4, S=16, C=64).items():
        p.add_argument(f"--{k}", type=int, default=v)
    p.add_argument("--chunk", type=int, default=None, help="the triton backend's time chunk (tokens per program)")
    p.add_argument("--sweep", action="store_true", help="also time the triton backend at several (chunk, warps) of "
                   "its forward and (tokens, warps) of its backward kernel")
    p.add_argument("--profile", action="store_true", help="print the CUDA kernels of one triton fwd+bwd")
    p.add_argument("--bank-sweep", action="store_true", help="also time the triton backend at several (channels, "
                   "warps) per program of the bank backward (bank_bwd_kernel)")
    p.add_argument("--skip-check", action="store_true", help="timing only")
    args = p.parse_args()
    if args.chunk:
        from mmrec_ops.backends import triton as triton_backend
        triton_backend.MR_CHUNK = args.chunk
    if not torch.cuda.is_available():
        raise SystemExit("check_memory_read.py needs a CUDA device")
    backends = [b for b in ("cuda", "triton") if b in mmrec_ops.built_backends()]
    if not args.skip_check:
        check(backends, [torch.float32, torch.float64, torch.bfloat16])
    bench(args, backends)
