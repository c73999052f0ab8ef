#!/usr/bin/env bash
# The one device command of H200 run p (2026-12-02), from the repository root: OUT=/dir bash <this file>.
# The final token-loop Triton memory_read (32 tokens, 1 warp per program) and CUDA_READ = "fused" by default:
# accuracy and times (kernels of one fwd+bwd), compiled training of the GPT and both MM-Rec variants (base, bf16,
# 16,384 tokens per step) at T=1,024, the read's op suite on triton-cuda, then T=16,384 for the GPT and linear MM-Rec.
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=600
source bench/device_deadline.sh
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run readcheck 60 python3 bench/check_memory_read.py --profile
run throughput 240 python3 bench/compare_models.py throughput --device cuda --compile on --sizes 1024 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --archs gpt,mmrec-linear,mmrec --budget-s 230 \
  --worker-timeout 150 --out "$O/throughput_cuda_compiled_1024.json"
run readtests 120 python3 -m pytest tests/ops/test_memory_read.py tests/ops/test_triton.py -q -p no:cacheprovider -rs \
  --durations=5 -k "triton-cuda or (triton and memory_read)"
run throughput16k 200 python3 bench/compare_models.py throughput --device cuda --compile on --sizes 16384 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --archs gpt,mmrec-linear --budget-s 190 \
  --worker-timeout 150 --out "$O/throughput_cuda_compiled_16384.json"
tar czf "$OUT/p.tgz" -C "$O" .
cat "$O/summary.log"; tail -n 22 "$O/readcheck.log"; grep "tok/s" "$O"/throughput*.log; tail -n 3 "$O/readtests.log"
