#!/usr/bin/env bash
# The one device command of H200 run o (2026-12-02), from the repository root: OUT=/dir bash <this file>.
# The Triton memory_read with the slots as tl.dot tiles over a chunk's tokens and a token loop for h and the banks:
# accuracy against float64, fwd and fwd+bwd times against the unfused path and the floor, a (chunk, warps) sweep,
# a sweep of the bank backward's tiles, the kernels of one fwd+bwd; then compiled training (base, bf16, B=16
# T=1,024) of the GPT and MM-Rec with the fused and the unfused read; the read's op suite on triton-cuda last.
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=540
source bench/device_deadline.sh
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run readcheck 180 python3 bench/check_memory_read.py --sweep --mdi-sweep --profile
run throughput 280 python3 bench/compare_models.py throughput --device cuda --compile on --sizes 1024 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 \
  --archs gpt,mmrec-linear-fused,mmrec-linear-unfused,mmrec-fused --budget-s 270 --worker-timeout 150 \
  --out "$O/throughput_cuda_compiled_readpath.json"
run readtests 200 python3 -m pytest tests/ops/test_memory_read.py tests/ops/test_triton.py -q -p no:cacheprovider -rs \
  --durations=5 -k "triton-cuda or (triton and memory_read)"
tar czf "$OUT/o.tgz" -C "$O" .
cat "$O/summary.log"; tail -n 45 "$O/readcheck.log"; tail -n 12 "$O/throughput.log"; tail -n 3 "$O/readtests.log"
