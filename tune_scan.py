import sys, torch, triton, triton.testing, itertools
import mmrec_ops
from mmrec_ops import backends, _triton, reference
dev = "cuda"
def bench_scan(B, T, D, dtype):
    a = (torch.rand(B, T, D, device=dev) * 0.5 + 0.5).to(dtype); b = torch.randn(B, T, D, device=dev).to(dtype)
    h0 = torch.randn(B, D, device=dev).to(dtype)
    res = {}
    for bt, bd, w in [(64, 64, 4), (32, 64, 4), (64, 32, 4), (128, 32, 4), (128, 64, 8), (32, 128, 4), (16, 128, 4), (64, 128, 8), (256, 16, 4), (32,32,2), (64,64,8)]:
        _triton.SCAN_BLOCK_T, _triton.SCAN_BLOCK_D, _triton.SCAN_WARPS = bt, bd, w
        f = lambda: _triton.scan_forward(a, b, h0, False)
        ms = triton.testing.do_bench(f, return_mode="median")
        g = torch.randn_like(a); hh = f()
        msb = triton.testing.do_bench(lambda: _triton.scan_backward(g, a, hh, h0, False), return_mode="median")
        ref = reference.scan(a[:2, :512].double(), b[:2, :512].double(), h0[:2].double())
        err = ((hh[:2, :512].double() - ref).abs().max() / ref.abs().max()).item()
        print(f"scan {dtype} B{B} T{T} D{D} bt{bt} bd{bd} w{w}: fwd {ms:.4f} bwd {msb:.4f} err {err:.1e}", flush=True)
bench_scan(8, 4096, 1024, torch.float32)
bench_scan(8, 4096, 1024, torch.bfloat16)
bench_scan(1, 16384, 256, torch.float32)
cp = lambda x: torch.cuda.synchronize()
print("copy a->h fp32 8x4096x1024:", triton.testing.do_bench(lambda: torch.add(torch.empty(0,device=dev), 0) , return_mode="median"))
x = torch.randn(8, 4096, 1024, device=dev); y = torch.randn_like(x)
print("torch a*b (2 reads 1 write):", triton.testing.do_bench(lambda: x * y, return_mode="median"))
# recurrence precision / speed
for prec in ("ieee", "tf32x3", "tf32"):
    _triton.RECURRENCE_FP32_PRECISION = prec
    B, T, D, H = 16, 1024, 1024, 8; d = D // H
    gen = torch.Generator(device=dev).manual_seed(0)
    z = torch.rand(B, T, D, device=dev, generator=gen) * 2 - 1; g = torch.rand(B, T, D, device=dev, generator=gen) * 0.5 + 0.5
    w = (torch.rand(H, d, d, device=dev, generator=gen) * 2 - 1) * d ** -0.5; bias = torch.rand(D, device=dev, generator=gen) * 0.2 - 0.1
    h0 = torch.rand(B, D, device=dev, generator=gen)
    try:
        f = lambda: _triton.recurrence_forward(z, g, w, bias, h0)
        ms = triton.testing.do_bench(f, return_mode="median")
        hh = f(); G = torch.randn_like(hh)
        msb = triton.testing.do_bench(lambda: _triton.recurrence_backward(G, z, g, w, bias, h0, hh), rep=200, return_mode="median")
        Ts = 64
        ref = reference.recurrence(z[:, :Ts].double(), g[:, :Ts].double(), w.double(), bias.double(), h0.double())
        err = ((hh[:, :Ts].double() - ref).abs().max() / ref.abs().max()).item()
        dz = _triton.recurrence_backward(G[:, :Ts].contiguous(), z[:, :Ts].contiguous(), g[:, :Ts].contiguous(), w, bias, h0, hh[:, :Ts].contiguous())
        ins = [x.double().requires_grad_() for x in (z[:, :Ts], g[:, :Ts], w, bias, h0)]
        gr = torch.autograd.grad(reference.recurrence(*ins), ins, G[:, :Ts].double())
        gerr = max(((x.double() - y).abs().max() / y.abs().max()).item() for x, y in zip(dz, gr))
        print(f"recurrence fp32 {prec}: fwd {ms:.3f} bwd {msb:.3f} err {err:.1e} grad err {gerr:.1e}", flush=True)
    except Exception as e:
        print("recurrence", prec, "failed", type(e).__name__, str(e)[:300])
