#!/usr/bin/env bash
# The one device command of H200 run g (2026-12-01), from the repository root: OUT=/dir bash <this file>.
# The recurrence's backward with the tensor-core gate / dW passes: its cuda op suite, compute-sanitizer, the latency
# table; then decode against context for MM-Rec (compiled CUDA-graph step) and the Hugging Face GPT-2 with a
# static cache + torch.compile in the same process, B = 1 and 64 (context x batch <= 1.1M tokens).
# Every step has a time budget inside one 540 s deadline; logs and JSONs go to $O, packed into $OUT/g.tgz.
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON
START=$SECONDS
left() { echo $(( 540 - (SECONDS - START) )); }
run() {  # run NAME BUDGET CMD...: at most BUDGET seconds and never past the deadline
  local name=$1 budget=$2; shift 2
  local t=$(( budget < $(left) ? budget : $(left) ))
  if [ "$t" -lt 10 ]; then echo "$name skipped (deadline)" | tee -a "$O/summary.log"; return; fi
  local s=$SECONDS; timeout "$t" "$@" > "$O/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - s)) s (budget $t)" | tee -a "$O/summary.log"
}
SAN="compute-sanitizer --error-exitcode 9 --print-limit 20 --target-processes all"
command -v compute-sanitizer >/dev/null 2>&1 || SAN="/usr/local/cuda/bin/$SAN"
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run rectests 90 python3 -m pytest tests/ops/test_recurrence.py -q -p no:cacheprovider --maxfail=25 -rs \
  -k "recurrence and cuda-cuda"
run memcheck 45 $SAN --tool memcheck python3 bench/check_cuda.py --small --ops recurrence
run racecheck 60 $SAN --tool racecheck python3 bench/check_cuda.py --small --ops recurrence
run recbench 90 python3 bench/bench_recurrence_latency.py --out "$O/recurrence_latency.json"
run decode $(( $(left) - 10 )) python3 bench/bench_decode.py --device cuda --preset base --dtype bfloat16 \
  --models mmrec-nonlinear-compiled,hf-gpt2-static-compile,mmrec-linear-compiled --contexts 1024,16384,65536 \
  --batches 1,64 --tokens 256 --max-prefill 1100000 --json "$O/decode_context.json"
tar czf "$OUT/g.tgz" -C "$O" .
cat "$O/summary.log"
