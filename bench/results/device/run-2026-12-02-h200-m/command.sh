#!/usr/bin/env bash
# The one device command of H200 run m (2026-12-02), from the repository root: OUT=/dir bash <this file>.
# The token-loop Triton memory_read (a program per (row, read head, chunk) walking its tokens with the banks and the
# slot chunk in registers): accuracy against float64, fwd and fwd+bwd times against the unfused path and the floor
# (a (chunk, warps) sweep, the kernels of one fwd+bwd), then its op suite on triton-cuda.
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=480
source bench/device_deadline.sh
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run readcheck 200 python3 bench/check_memory_read.py --sweep --profile
run readtests 220 python3 -m pytest tests/ops/test_memory_read.py tests/ops/test_triton.py -q -p no:cacheprovider -rs \
  --durations=5 -k "triton-cuda or (triton and memory_read)"
tar czf "$OUT/m.tgz" -C "$O" .
cat "$O/summary.log"; tail -n 60 "$O/readcheck.log"; tail -n 5 "$O/readtests.log"
