#!/usr/bin/env bash
# The one device command of H200 run k (2026-12-01), from the repository root: OUT=/dir bash <this file>.
# Training throughput compiled against compiled at T=1,024 (base, bf16, 16,384 tokens per step): the GPT, MM-Rec
# linear with the fused read (Triton op inside the compiled graph) and with the unfused read, MM-Rec nonlinear with
# the fused read; then the eager decode peers (project GPT, HF GPT-2 generate) at the contexts and batch 8 that
# earlier runs lack.
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=540
source bench/device_deadline.sh
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run throughput 390 python3 bench/compare_models.py throughput --device cuda --compile on --sizes 1024 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 \
  --archs gpt,mmrec-linear-fused,mmrec-linear-unfused,mmrec-fused --budget-s 385 --worker-timeout 170 \
  --out "$O/throughput_cuda_compiled_readpath.json"
run decodepeers $(( $(left) - 8 )) python3 bench/bench_decode.py --device cuda --preset base --dtype bfloat16 \
  --models gpt,hf-gpt2 --contexts 1024,16384,65536 --batches 1,8 --tokens 64 --json "$O/decode_eager_peers.json"
tar czf "$OUT/k.tgz" -C "$O" .
cat "$O/summary.log"
