"""`python bench/saved_activations.py`: bytes each arch saves for its backward, per token, on the CPU.

Peak training memory is parameters + gradients + optimizer state + the activations saved for the backward + the
backward's transients. This measures the saved activations (tensors with a token dimension that autograd keeps
from the forward to the backward, each storage counted once) of one training forward under bf16 autocast, eager
and compiled with the min-cut partitioner inductor uses (backend "aot_eager_decomp_partition": the same choice of
what to save and what to recompute, without generating kernels), and the parameter count behind the fixed part
(float32 weight, gradient and two AdamW moments: 16 bytes per parameter).

    python bench/saved_activations.py --archs mmrec-linear,mmrec,gpt --T 256
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_models import build_model  # noqa: E402


def saved_bytes(model, ids: torch.Tensor, targets: torch.Tensor, compiled: bool) -> int:
    """Bytes of the storages with a token dimension that one bf16-autocast forward saves for its backward."""
    T = ids.shape[1]
    step = torch.compile(model, backend="aot_eager_decomp_partition") if compiled else model
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    total = 0
    for _ in range(2):                                     # the second pass: compiled graphs are built by then
        storages: Dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            ptr = t.untyped_storage().data_ptr()
            if T in t.shape and ptr not in weights:
                storages[ptr] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits, _ = step(ids)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        total = sum(storages.values())
        loss.backward()
        model.zero_grad(set_to_none=True)
    return total


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="mmrec-linear,mmrec,gpt")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--T", type=int, default=256, help="tokens of the one row")
    parser.add_argument("--tokens-per-step", type=int, default=16384,
                        help="tokens the fixed part is spread over (the H200 runs' step)")
    args = parser.parse_args(argv)
    print(f"# preset {args.preset}, B=1 T={args.T}, bf16 autocast, CPU, torch {torch.__version__}")
    print(f"{'arch':>14} {'params (M)':>11} {'fixed KiB/token':>16} {'saved eager KiB/token':>22} "
          f"{'saved compiled KiB/token':>25}")
    for arch in args.archs.split(","):
        torch.manual_seed(0)
        model = build_model(arch, args.preset).train()
        V = model.config.vocab_size
        ids, targets = torch.randint(0, V, (1, args.T)), torch.randint(0, V, (1, args.T))
        params = model.num_parameters()
        fixed = params * 16 / args.tokens_per_step / 1024
        eager, compiled = (saved_bytes(model, ids, targets, c) / args.T / 1024 for c in (False, True))
        print(f"{arch:>14} {params / 1e6:>11.1f} {fixed:>16.1f} {eager:>22.1f} {compiled:>25.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
