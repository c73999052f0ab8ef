#!/usr/bin/env bash
# The one device command of H200 run e (2026-12-01), from the repository root: OUT=/dir bash <this file>.
# Every step has a time budget inside one 285 s deadline; logs and JSONs go to $O, packed into $OUT/e.tgz.
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON
START=$SECONDS
left() { echo $(( 285 - (SECONDS - START) )); }
run() {  # run NAME BUDGET CMD...: at most BUDGET seconds and never past the deadline
  local name=$1 budget=$2; shift 2
  local t=$(( budget < $(left) ? budget : $(left) ))
  if [ "$t" -lt 10 ]; then echo "$name skipped (deadline)" | tee -a "$O/summary.log"; return; fi
  local s=$SECONDS; timeout "$t" "$@" > "$O/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - s)) s (budget $t)" | tee -a "$O/summary.log"
}
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run readtime 70 python3 bench/check_memory_read.py --skip-check
run throughput 200 python3 bench/compare_models.py throughput --device cuda --sizes 1024 --tokens-per-step 16384 \
  --micro-tokens 16384 --dtype bf16 --archs mmrec-linear,gpt,mmrec --budget-s 195 --worker-timeout 100 \
  --out "$O/throughput_cuda.json"
tar czf "$OUT/e.tgz" -C "$O" .
cat "$O/summary.log"
