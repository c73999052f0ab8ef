"""Is the CPU one-token step (kernels/cpu/decode_step.cpp) bound by streaming its weights? Prints, in one process,
the step's wall and CPU time per token (B=1, the C++ kernel, and the torch-op step) beside the streaming ceilings
over as many float32 bytes as the step streams per token (the packed GEMV weights: every matrix but the embedding
and the slot-update keys), held hot by repetition: a numpy sum (one thread), torch.sum and a torch GEMV [n / D, D] x
[D] with the same thread count; then the step's phases (worker 0's clock at the end of each wait, the kernel's
profile): per block in_proj + W_g, the per-row work (thread 0 alone), out_proj, up, down, and the lm head, each with
its bytes per second, and how the weights split between the threads; and a cache curve (torch.sum over hot
buffers of 2-64 MiB), which places the step's bytes against the cache this process gets. CPU time is the
process's, so a loaded machine's descheduling does not count.

    python bench/decode_bandwidth.py --preset small --threads 2
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))


def _best(fn, n: int, repeat: int = 5):
    """(wall ms, CPU ms) per call, each the minimum over `repeat` runs of n calls."""
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        walls.append((time.perf_counter() - t) / n * 1e3)
        cpus.append((time.process_time() - c) / n * 1e3)
    return min(walls), min(cpus)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tokens", type=int, default=64)
    args = p.parse_args()
    from mmrec_model import MMRecLM
    from mmrec_model.decode import DecodeState, step

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MMRecLM.from_preset(args.preset).eval()
    streamed = sum(p.numel() for n, p in model.named_parameters()
                   if p.dim() >= 2 and not n.startswith("embed") and "key_proj" not in n and not n.endswith("M0"))
    if model.config.tie_embeddings:
        streamed += model.lm_head.weight.numel()
    buf = np.ones(streamed, dtype=np.float32)
    print(f"load average before {os.getloadavg()}; {args.preset}, {args.threads} thread(s), "
          f"{streamed * 4 / 2**20:.1f} MiB of float32 weights streamed per token")
    token = torch.tensor([5])
    with torch.no_grad():
        for kernel in (True, False):
            ds = DecodeState(model, 1, kernel=kernel)
            _best(lambda: step(ds, token), 8, 1)
            wall, cpu = _best(lambda: step(ds, token), args.tokens)
            name = "C++ step" if kernel else "torch-op step"
            print(f"{name:>15}: wall {wall:.3f} ms/token, CPU {cpu:.3f} ms/token")
    wall, cpu = _best(buf.sum, 20)
    print(f"{'numpy sum':>15}: wall {wall:.3f} ms, CPU {cpu:.3f} ms over the same bytes "
          f"({streamed * 4 / cpu / 1e6:.1f} GB/s of CPU time)")
    tbuf = torch.ones(streamed)
    mat, vec = tbuf[: streamed // model.config.d_model * model.config.d_model].view(-1, model.config.d_model), \
        torch.ones(model.config.d_model)
    for name, fn in (("torch.sum", tbuf.sum), ("torch GEMV", lambda: torch.mv(mat, vec))):
        wall, cpu = _best(fn, 20)
        print(f"{name:>15}: wall {wall:.3f} ms over the same bytes ({streamed * 4 / wall / 1e6:.1f} GB/s of wall time, "
              f"{args.threads} thread(s))")
    _cache_curve(streamed * 4, args.threads)
    _phases(model, token, args.tokens)
    print(f"load average after {os.getloadavg()}")


def _cache_curve(step_bytes: int, threads: int) -> None:
    """torch.sum's rate over hot buffers of growing size: where the buffer stops fitting the cache this process
    gets (the rate falls to DRAM's), and the step's own bytes placed on that curve."""
    print(f"cache curve (torch.sum, {threads} thread(s), hot buffer, best of 5 x 20):")
    for mib in (2, 4, 8, 12, 16, step_bytes / 2**20, 32, 64):
        t = torch.ones(int(mib * 2**20) // 4)
        wall, _ = _best(t.sum, 20)
        mark = "  <- the step's weights" if mib == step_bytes / 2**20 else ""
        print(f"  {mib:6.1f} MiB: {wall:7.3f} ms, {mib * 2**20 / wall / 1e6:6.1f} GB/s{mark}")


def _phases(model, token, n: int) -> None:
    """The C++ step's phase times over n tokens (the kernel's profile), with the bytes each phase streams."""
    from mmrec_model.decode import _PACKED, DecodeState, step

    ds = DecodeState(model, 1, kernel=True)
    packed = _PACKED[model][1]
    cfg = model.config
    D, V, L, F = cfg.d_model, cfg.vocab_size, cfg.n_layers, model.blocks[0].ffn.down.weight.shape[1]
    W = model.blocks[0].in_proj.weight.shape[0]
    pad = lambda rows: -(-rows // 16) * 16                                    # noqa: E731 (tiles of 16 columns)
    w_g = 0 if cfg.recurrence == "linear" else D * D // cfg.n_heads
    elems = [pad(W) * D + w_g, 0, D * D, pad(2 * F) * D, pad(D) * F]            # per block, as the phases
    names = ["in_proj+W_g", "per-row work", "out_proj", "up", "down"]
    step(ds, token)
    packed.set_profile(True)
    for _ in range(n):
        step(ds, token)
    prof = packed.profile()
    packed.set_profile(False)
    ns, steps = prof["phase_ns"], prof["steps"]
    total = sum(ns) / steps / 1e3
    print(f"phases of the C++ step ({steps} tokens; {len(ns)} waits per token by thread 0): {total:.1f} us/token")
    for k, name in enumerate(names + ["lm head"]):
        us = (ns[-1] if k == 5 else sum(ns[l * 5 + k] for l in range(L))) / steps / 1e3
        mib = (pad(V) * D if k == 5 else elems[k] * L) * 4 / 2**20
        rate = f"{mib * 2**20 / us / 1e3:6.1f} GB/s" if mib else ""
        print(f"{name:>15}: {us:7.1f} us/token ({us / total:5.1%}) over {mib:5.2f} MiB {rate}")
    work = prof["worker_elems"]
    print("weights streamed per thread: " + ", ".join(f"{w / sum(work):.0%}" for w in work))


if __name__ == "__main__":
    main()
