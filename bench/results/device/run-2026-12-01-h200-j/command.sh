#!/usr/bin/env bash
# The one device command of H200 run j (2026-12-01), from the repository root: OUT=/dir bash <this file>.
# Run i's remainder: MM-Rec linear's compiled CUDA-graph decode against context and batch, then the CUDA decode
# tests (graph and compiled-graph decode equal to eager decode; each compiles its tiny model's step) with their
# durations.
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=530
source bench/device_deadline.sh
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run decode 170 python3 bench/bench_decode.py --device cuda --preset base --dtype bfloat16 \
  --models mmrec-linear-compiled --contexts 1024,16384,65536 \
  --batches 1,8,64 --tokens 256 --max-prefill 1100000 --json "$O/decode_context_linear.json"
run decodetests $(( $(left) - 10 )) python3 -m pytest tests/model/test_decode.py -v -p no:cacheprovider -rs \
  --durations=0 -k "cuda or compiled"
tar czf "$OUT/j.tgz" -C "$O" .
cat "$O/summary.log"
