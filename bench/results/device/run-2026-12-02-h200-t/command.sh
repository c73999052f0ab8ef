#!/usr/bin/env bash
# The one device command of H200 run t (2026-12-02, the warm machine of run s, its build), from the repository root:
# OUT=/dir bash <this file>. The compiled training step at T=16,384 (B=1, base, bf16): GPT and both MM-Rec variants.
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 DEADLINE_S=250
source bench/device_deadline.sh
run throughput16k 245 python3 bench/compare_models.py throughput --device cuda --compile on --sizes 16384 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --archs gpt,mmrec-linear,mmrec --budget-s 240 \
  --worker-timeout 100 --out "$O/throughput_cuda_compiled_16384.json"
tar czf "$OUT/t.tgz" -C "$O" .
cat "$O/summary.log"; grep "tok/s" "$O/throughput16k.log"
