"""Is the CPU one-token step (kernels/cpu/decode_step.cpp) bound by streaming its weights? Prints, in one process,
the step's wall and CPU time per token (B=1, the C++ kernel, and the torch-op step) beside a numpy sum over as many
float32 bytes as the step streams per token (the packed GEMV weights: every matrix but the embedding and the
slot-update keys). CPU time is the process's, so a loaded machine's descheduling does not count.

    python bench/decode_bandwidth.py --preset small --threads 1
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
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
