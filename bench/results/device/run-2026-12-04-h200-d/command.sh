#!/usr/bin/env bash
# The one device command of H200 run d (2026-12-04; the warm machine of run c), from the repository root:
# OUT=/dir bash <this file>, with .whl/ and .devsnap/ as in run c. The compiled training step at T=16,384 (B=1;
# base, bf16, 16,384 tokens per step), mode="reduce-overhead" (CUDA graphs), the GPT and both MM-Rec variants.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=330
source bench/device_deadline.sh
cp .devsnap/recurrence.cpp kernels/cpu/recurrence.cpp
run build 60 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run throughput_graphs 260 python3 bench/compare_models.py throughput --device cuda --compile on \
  --compile-mode reduce-overhead --sizes 16384 --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 \
  --archs mmrec-linear,gpt,mmrec --budget-s 250 --worker-timeout 100 --steps 3 \
  --out "$O/throughput_cuda_graphs_16384.json"
tar czf "$OUT/d.tgz" -C "$O" .
cat "$O/summary.log"; grep "tok/s" "$O/throughput_graphs.log"; grep -B2 -A8 "Error" "$O/throughput_graphs.log" | head -30
