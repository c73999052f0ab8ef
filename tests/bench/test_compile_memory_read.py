"""bench/compile_memory_read.py: the Triton memory_read kernels build for real GPUs (PTX through ptxas, no GPU needed)
at the blocks the backend launches; elsewhere on a CPU they run only in Triton's interpreter, which this suite turns
on, so the build runs in a child process without it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

if not os.environ.get("CI"):            # CI installs the triton extra: its absence fails there instead of skipping
    pytest.importorskip("triton")

from mmrec_ops.backends import triton as triton_backend  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "bench"
CHILD = ("import json, sys; import compile_memory_read as c; "
         "print(json.dumps(c.compile_all(c.parser().parse_args(sys.argv[1:]))))")


@pytest.mark.parametrize("dtype,acc_bytes,sm", [("bf16", 4, 90), ("fp64", 8, 90), ("bf16", 4, 80)])
def test_kernels_build_at_the_backends_blocks(dtype, acc_bytes, sm):
    bwd_L, bwd_warps = triton_backend._mr_bwd_tiles(4, 64, acc_bytes)
    argv = ["--dtype", dtype, "--sm", str(sm), "--L", str(triton_backend.MR_CHUNK), "--fwd-warps",
            str(triton_backend.MR_WARPS), "--bwd-L", str(bwd_L), "--bwd-warps", str(bwd_warps)]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH)] + sys.path)
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    built = json.loads(done.stdout.strip().splitlines()[-1])
    assert [b["kernel"] for b in built] == ["memory_read_fwd_kernel"] + ["memory_read_bwd_kernel"] * 2
    assert all(0 < b["registers"] <= 255 for b in built)
    # the forward's token loop keeps its banks and slots in registers: a spill would put local memory on the
    # sequential path of every token
    assert built[0]["spill_stores"] == 0
