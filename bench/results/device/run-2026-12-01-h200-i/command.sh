#!/usr/bin/env bash
# The one device command of H200 run i (2026-12-01), from the repository root: OUT=/dir bash <this file>.
# The linear variant's compiled training step with the fused memory_read forced on (mmrec-linear-fused), base, bf16,
# B=16 T=1,024: does the fused read pay under torch.compile too? (run e: the unfused read compiled, 172,661 tokens/s.)
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON
START=$SECONDS
left() { echo $(( 172 - (SECONDS - START) )); }
run() {  # run NAME BUDGET CMD...: at most BUDGET seconds and never past the deadline
  local name=$1 budget=$2; shift 2
  local t=$(( budget < $(left) ? budget : $(left) ))
  if [ "$t" -lt 10 ]; then echo "$name skipped (deadline)" | tee -a "$O/summary.log"; return; fi
  local s=$SECONDS; timeout "$t" "$@" > "$O/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - s)) s (budget $t)" | tee -a "$O/summary.log"
}
run build 70 python3 -m pip install --no-build-isolation --no-deps \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run compiled $(( $(left) - 4 )) python3 bench/compare_models.py throughput --device cuda --compile on --sizes 1024 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --archs mmrec-linear-fused --steps 3 --warmup 1 \
  --budget-s 150 --worker-timeout 150 --out "$O/throughput_cuda_compiled_fused.json"
tar czf "$OUT/i.tgz" -C "$O" .
cat "$O/summary.log"
