"""Compiles the memory_read Triton kernels for a CUDA target without a GPU (ASTSource -> PTX -> ptxas) and prints
ptxas's registers and spill bytes per kernel: a check that they build for real, not only in the interpreter.
    python bench/compile_memory_read.py [--dtype bf16|fp16|fp32|fp64] [--L 32 --fwd-warps 1] [--bwd-L 32 --bwd-warps 4]
        [--N 4 --dh 64] [--sm 90]
(defaults: the benchmark's N = 4 banks, S = 16 slots, dh = 64 at the backend's blocks)."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from typing import Dict, List

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mmrec_ops.triton_kernels import memory_read as mr


def build(fn, ptrs, consts, ints, warps, sm, label=""):
    """ints: the integer arguments' values at the launch being mimicked. As Triton's launcher does, pointers and
    integers divisible by 16 are compiled as such (the head's columns then load as vectors), integers equal to 1 as
    constants."""
    consts = {k: v for k, v in consts.items() if k in fn.arg_names}   # each kernel takes its own constexprs
    consts.update({k: 1 for k, v in ints.items() if v == 1 and k in fn.arg_names})
    sig = {name: "constexpr" if name in consts else ptrs.get(name, "i32") for name in fn.arg_names}
    aligned = [name for name in fn.arg_names if name not in consts and (name in ptrs or ints.get(name, 1) % 16 == 0)]
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
    kernel = triton.compile(ASTSource(fn, sig, constexprs=consts, attrs=attrs), target=GPUTarget("cuda", sm, 32),
                            options=dict(num_warps=warps))
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(kernel.asm["ptx"])
        f.flush()
        out = subprocess.run([ptxas, f"-arch=sm_{sm}a" if sm >= 90 else f"-arch=sm_{sm}", "-v", f.name, "-o",
                              os.devnull], capture_output=True, text=True, check=True)
    info = [line.split("info    : ")[-1] for line in out.stderr.splitlines() if "Used" in line or "spill" in line]
    print(f"{fn.__name__} {label} warps={warps}: " + " | ".join(info))
    text = " ".join(info)
    return dict(kernel=fn.__name__, label=label, registers=int(re.search(r"Used (\d+) registers", text).group(1)),
                spill_stores=int(re.search(r"(\d+) bytes spill stores", text).group(1)))


def compile_all(a) -> List[Dict]:
    """Builds the forward kernel and the backward kernel (without and with dL/dm_last) for the options `a`; one
    dict of ptxas's figures per kernel."""
    acc_name = "fp64" if a.dtype == "fp64" else "fp32"
    blocks = dict(ACC=tl.float64 if a.dtype == "fp64" else tl.float32,
                  PREC="tf32" if a.dtype in ("bf16", "fp16") else "ieee", BLOCK_N=triton.next_power_of_2(a.N),
                  BLOCK_S=16, BLOCK_DH=triton.next_power_of_2(a.dh))
    io = ("q_ptr", "h_ptr", "v_ptr", "mod_ptr", "base_ptr", "Ms_ptr", "r_ptr", "grad_r_ptr", "grad_m_ptr", "dq_ptr",
          "dh_ptr", "dxm_ptr", "m_ptr")
    scratch = ("entry_ptr", "consts_ptr", "dms_part_ptr")
    ptrs = {**{n: f"*{a.dtype}" for n in io}, **{n: f"*{acc_name}" for n in scratch}}
    # the benchmark's launch: B=8 T=2048 heads=12 C=64, q and v columns of the in-projection [B, T, 3D + N]
    T, D, C, S = 2048, 12 * a.dh, 64, 16
    ints = dict(T=T, N=a.N, D=D, dh=a.dh, NS=T // C, S=S, H=12, k0=0, C=C, J=1, SQ=3 * D + a.N, SV=3 * D + a.N,
                SMB=T // C * S * D)
    out = [build(mr.memory_read_fwd_kernel, ptrs, dict(BLOCK_L=a.L, **blocks), dict(ints, NC=T // a.L), a.fwd_warps,
                 a.sm, f"L={a.L}")]
    for has_gm in (False, True):
        out.append(build(mr.memory_read_bwd_kernel, ptrs, dict(BLOCK_L=a.bwd_L, HAS_GM=has_gm, **blocks),
                         dict(ints, NC=T // a.bwd_L), a.bwd_warps, a.sm, f"L={a.bwd_L} HAS_GM={has_gm}"))
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32", "fp64"])
    p.add_argument("--L", type=int, default=32, help="the forward's tokens per program")
    p.add_argument("--bwd-L", type=int, default=32, help="the backward's tokens per program")
    p.add_argument("--N", type=int, default=4)
    p.add_argument("--dh", type=int, default=64)
    p.add_argument("--fwd-warps", type=int, default=1)
    p.add_argument("--bwd-warps", type=int, default=4)
    p.add_argument("--sm", type=int, default=90)
    return p


if __name__ == "__main__":
    compile_all(parser().parse_args())
