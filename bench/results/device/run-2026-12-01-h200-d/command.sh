#!/usr/bin/env bash
# The one device command of H200 run d (2026-12-01), from the repository root: OUT=/dir bash <this file>.
# Every step has a time budget inside one 590 s deadline; logs and JSONs go to $O, packed into $OUT/d.tgz.
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON
START=$SECONDS
left() { echo $(( 590 - (SECONDS - START) )); }
run() {  # run NAME BUDGET CMD...: at most BUDGET seconds and never past the deadline
  local name=$1 budget=$2; shift 2
  local t=$(( budget < $(left) ? budget : $(left) ))
  if [ "$t" -lt 10 ]; then echo "$name skipped (deadline)" | tee -a "$O/summary.log"; return; fi
  local s=$SECONDS; timeout "$t" "$@" > "$O/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - s)) s (budget $t)" | tee -a "$O/summary.log"
}
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run decodetests 80 python3 -m pytest tests/model/test_decode.py tests/model/test_decode_cpu_kernel.py -q \
  -p no:cacheprovider -k "cuda or kernel"
run readtests 60 python3 -m pytest tests/ops/test_memory_read.py -q -p no:cacheprovider --maxfail=10 -k "triton-cuda"
run readcheck 45 python3 bench/check_memory_read.py
run throughput 220 python3 bench/compare_models.py throughput --device cuda --sizes 1024 --tokens-per-step 16384 \
  --micro-tokens 16384 --dtype bf16 --archs gpt,mmrec-linear,mmrec --budget-s 215 --worker-timeout 110 \
  --out "$O/throughput_cuda.json"
run eager16k 50 python3 bench/compare_models.py throughput --device cuda --compile off --sizes 16384 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --archs mmrec,gpt --steps 3 --budget-s 48 \
  --worker-timeout 30 --out "$O/throughput_cuda_eager.json"
run decodepeers 200 python3 bench/bench_decode.py --device cuda --preset base --dtype bfloat16 \
  --models mmrec-nonlinear,hf-gpt2-static-compile --contexts 1024 --batches 1,64 --tokens 256 \
  --json "$O/decode_peers.json"
tar czf "$OUT/d.tgz" -C "$O" .
cat "$O/summary.log"
