"""CPU `mdi` (fused) against the unfused composition and the reference loop; prints a table and writes JSON.

    python bench/bench_mdi.py            # BxTxNxD = 8x1024x4x512, 1x8192x4x256, 8x128x4x512, float32
    python bench/bench_mdi.py --quick    # small shapes

GB/s counts the op's memory-traffic floor: forward reads v, mod, base, m0 and writes m; backward reads
grad, v, mod, base, m, m0 and writes dv, dmod, dbase, dm0 (the big terms: m and grad, B*T*N*D each).
%copy is that rate over the copy bandwidth of a 256 MB torch copy measured in the same run.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mmrec_ops  # noqa: E402
from common import Row, run_cpu_op_bench, step_fn  # noqa: E402

SHAPES = [(8, 1024, 4, 512), (1, 8192, 4, 256), (8, 128, 4, 512)]  # (B, T, N, D)
# The reference's backward is quadratic in T (autograd of gamma[:, t] adds a full [B, T, N, D] zero tensor
# per step: minutes at T = 1024), so its fwd+bwd runs only up to this T.
REFERENCE_BWD_MAX_T = 256
QUICK_SHAPES = [(2, 256, 4, 128)]
EPS = 1e-6
REFERENCE = "reference (per-step loop)"


def fused(v, mod, base, m0):
    with mmrec_ops.backend("cpu"):
        return mmrec_ops.mdi(v, mod, base, m0, EPS)


def unfused(v, mod, base, m0):
    """sigmoid, clamp, multiply in torch, then mmrec's scan over [B, T, N*D]: gamma and (1 - gamma) v
    are materialised at B*T*N*D each, and autograd keeps them."""
    B, T, D = v.shape
    N = base.shape[0]
    gamma = torch.clamp(torch.sigmoid(base)[None, None] * torch.sigmoid(mod)[..., None], EPS, 1 - EPS)
    b = (1 - gamma) * v[:, :, None, :]
    with mmrec_ops.backend("cpu"):
        h = mmrec_ops.scan(gamma.reshape(B, T, N * D), b.reshape(B, T, N * D), m0.reshape(B, N * D))
    return h.view(B, T, N, D)


def reference(v, mod, base, m0):
    return mmrec_ops.reference.mdi(v, mod, base, m0, EPS)


IMPLS: Dict[str, Callable] = {"mmrec-cpu (fused)": fused, "unfused (torch + mmrec scan)": unfused,
                              REFERENCE: reference}



def make_inputs(shape: Tuple[int, int, int, int], dtype, grad: bool):
    B, T, N, D = shape
    g = torch.Generator().manual_seed(0)
    xs = (torch.randn(B, T, D, generator=g), 2 * torch.randn(B, T, N, generator=g),
          1 + 2 * torch.randn(N, D, generator=g), torch.randn(B, N, D, generator=g))
    return [x.to(dtype).requires_grad_(grad) for x in xs]


def floor_elements(shape, pass_: str) -> int:
    B, T, N, D = shape
    fwd = B * T * D + B * T * N + N * D + B * N * D + B * T * N * D
    bwd = 2 * (B * T * N * D + B * T * D + B * T * N + N * D + B * N * D)
    return fwd if pass_ == "fwd" else fwd + bwd


def bench_case(fn, shape, dtype, pass_: str):
    inputs = make_inputs(shape, dtype, grad=pass_ == "fwd+bwd")
    return step_fn(fn, inputs, pass_, shape)  # gradient like the output [B, T, N, D]


def main(argv=None) -> List[Row]:
    def quadratic_reference(shape, name, pass_):
        too_long = name == REFERENCE and pass_ == "fwd+bwd" and shape[1] > REFERENCE_BWD_MAX_T
        return "quadratic in T" if too_long else None

    return run_cpu_op_bench("mdi", "bench_mdi.py", SHAPES, QUICK_SHAPES, IMPLS, REFERENCE, bench_case,
                            floor_elements, skip=quadratic_reference, argv=argv)

if __name__ == "__main__":
    main()
