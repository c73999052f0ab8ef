"""CPU `memory_update` (fused) against the reference loop; prints a table and writes JSON.

    python bench/bench_memory_update.py           # B=8, NC=64, S=64, D=512 and B=1, NC=256, S=32, D=256, float32
    python bench/bench_memory_update.py --quick   # small shapes

The reference (one batched torch op per step of the chunk loop, autograd for the backward) is also the
unfused composition: nothing coarser exists in torch for a softmax-addressed sequential write.
GB/s counts the op's memory-traffic floor: forward reads M0, key, value, strength and writes Ms; backward
reads grad, Ms, key, value, strength and writes dM0, dkey, dvalue, dstrength (the big terms: Ms and
grad, B*(NC+1)*S*D each). %copy is that rate over the copy bandwidth of a 256 MB torch copy in the same run.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mmrec_ops  # noqa: E402
from common import Row, run_cpu_op_bench, step_fn  # noqa: E402

SHAPES = [(8, 64, 64, 512), (1, 256, 32, 256)]  # (B, NC, S, D)
QUICK_SHAPES = [(2, 16, 16, 64)]
REFERENCE = "reference (per-chunk loop)"


def fused(M0, key, value, strength):
    with mmrec_ops.backend("cpu"):
        return mmrec_ops.memory_update(M0, key, value, strength)


IMPLS: Dict[str, Callable] = {"mmrec-cpu (fused)": fused, REFERENCE: mmrec_ops.reference.memory_update}



def make_inputs(shape: Tuple[int, int, int, int], dtype, grad: bool):
    B, NC, S, D = shape
    g = torch.Generator().manual_seed(0)
    xs = (torch.randn(B, S, D, generator=g), torch.randn(B, NC, D, generator=g),
          torch.randn(B, NC, D, generator=g), torch.rand(B, NC, generator=g))
    return [x.to(dtype).requires_grad_(grad) for x in xs]


def floor_elements(shape, pass_: str) -> int:
    B, NC, S, D = shape
    fwd = B * S * D + 2 * B * NC * D + B * NC + B * (NC + 1) * S * D
    bwd = 2 * B * (NC + 1) * S * D + 4 * B * NC * D + 2 * B * NC + B * S * D
    return fwd if pass_ == "fwd" else fwd + bwd


def flops(shape, pass_: str) -> int:
    B, NC, S, D = shape
    per = 5 if pass_ == "fwd" else 5 + 12  # per slot element and chunk (kernel header)
    return per * B * NC * S * D


def bench_case(fn, shape, dtype, pass_: str):
    inputs = make_inputs(shape, dtype, grad=pass_ == "fwd+bwd")
    B, NC, S, D = shape
    return step_fn(fn, inputs, pass_, (B, NC + 1, S, D))  # gradient like the output Ms


def main(argv=None) -> List[Row]:
    return run_cpu_op_bench("memory_update", "bench_memory_update.py", SHAPES, QUICK_SHAPES, IMPLS, REFERENCE,
                            bench_case, floor_elements, flops=flops, argv=argv)

if __name__ == "__main__":
    main()
