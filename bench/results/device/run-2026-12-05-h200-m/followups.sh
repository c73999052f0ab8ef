#!/usr/bin/env bash
# The second and third device calls of H200 run m (2026-12-05), on the same warm machine right after command.sh,
# from its source tree (/tmp/src) with its `all` build in /tmp/p/all: the nonlinear variant's compiled step at
# T=16,384 (command.sh's throughput step ran linear and the GPT only), then the three archs at T=1,024.
set -u
PYTHONPATH=/tmp/p/all:/tmp/site timeout 215 python3 bench/compare_models.py throughput --device cuda --compile on \
  --compile-mode reduce-overhead --sizes 16384 --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 \
  --archs mmrec --budget-s 210 --worker-timeout 200 --steps 5 --out "$OUT/throughput_nonlinear_16384.json" 2>&1 \
  | tee "$OUT/throughput_nonlinear_16384.log" | tail -5
PYTHONPATH=/tmp/p/all:/tmp/site timeout 185 python3 bench/compare_models.py throughput --device cuda --compile on \
  --compile-mode reduce-overhead --sizes 1024 --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 \
  --archs mmrec-linear,gpt,mmrec --budget-s 180 --worker-timeout 90 --steps 5 --out "$OUT/throughput_1024.json" 2>&1 \
  | tee "$OUT/throughput_1024.log" | grep "tok/s\|TIMEOUT" | sort -u
