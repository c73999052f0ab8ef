#!/usr/bin/env bash
# The one device command of H200 run h (2026-12-01), from the repository root: OUT=/dir bash <this file>.
# The recurrence with the SFU sigmoid in the 16-bit forward (op suite, latency table); the memory_read Triton kernels
# with tl.dot slot tiles (float64 check + timing against mdi + the unfused read, then a second time chunk); the
# model's training step eager with the unfused and the fused read side by side (T = 1,024 and 16,384); the
# memory_read op suite on triton (two pytest processes) with what time is left.
# Every step has a time budget inside one 560 s deadline; logs and JSONs go to $O, packed into $OUT/h.tgz.
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON
START=$SECONDS
left() { echo $(( 560 - (SECONDS - START) )); }
run() {  # run NAME BUDGET CMD...: at most BUDGET seconds and never past the deadline
  local name=$1 budget=$2; shift 2
  local t=$(( budget < $(left) ? budget : $(left) ))
  if [ "$t" -lt 10 ]; then echo "$name skipped (deadline)" | tee -a "$O/summary.log"; return; fi
  local s=$SECONDS; timeout "$t" "$@" > "$O/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - s)) s (budget $t)" | tee -a "$O/summary.log"
}
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run rectests 60 python3 -m pytest tests/ops/test_recurrence.py -q -p no:cacheprovider --maxfail=25 -rs \
  -k "recurrence and cuda-cuda"
run recbench 60 python3 bench/bench_recurrence_latency.py --out "$O/recurrence_latency.json"
run readcheck 120 python3 bench/check_memory_read.py
run readtime32 60 python3 bench/check_memory_read.py --skip-check --chunks 32,16
run readpath 130 python3 bench/compare_models.py throughput --device cuda --compile off --sizes 1024,16384 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --archs mmrec-linear,mmrec-linear-fused,mmrec,gpt \
  --steps 3 --budget-s 125 --worker-timeout 60 --out "$O/throughput_cuda_eager_readpath.json"
T0=$SECONDS; B=$(( $(left) - 12 ))
for sel in "triton-cuda and (segments or bad_inputs or long_slot)" "triton-cuda and not segments and not bad_inputs and not long_slot"; do
  n=readtests_$(echo "$sel" | tr -c 'a-z\n' '_' | cut -c1-40)
  timeout "$B" python3 -m pytest tests/ops/test_memory_read.py -q -p no:cacheprovider -rs --durations=8 -k "$sel" \
    > "$O/$n.log" 2>&1 &
done
timeout "$B" python3 -m pytest tests/ops/test_triton.py -q -p no:cacheprovider -k memory_read > "$O/readtriton.log" 2>&1 &
wait
echo "readtests (3 processes) $((SECONDS - T0)) s (budget $B)" | tee -a "$O/summary.log"
tail -n 2 "$O"/readtests_*.log "$O/readtriton.log" | tee -a "$O/summary.log"
tar czf "$OUT/h.tgz" -C "$O" .
cat "$O/summary.log"
