#!/usr/bin/env bash
# The one device command of H200 run l (2026-12-01), from the repository root: OUT=/dir bash <this file>.
# Op-suite logs on the H200 that earlier runs lack: the Triton recurrence (every test of tests/ops/test_recurrence.py
# on triton-cuda and tests/ops/test_triton.py's recurrence cases), and the Triton memory_read's float64/gradient
# group, which run h's deadline cut. Three pytest processes at once (correctness only, nothing timed).
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=430
source bench/device_deadline.sh
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
T0=$SECONDS; B=$(( $(left) - 10 ))
timeout "$B" python3 -m pytest tests/ops/test_recurrence.py -q -p no:cacheprovider -rs --durations=5 \
  -k "triton-cuda" > "$O/rectriton.log" 2>&1 &
timeout "$B" python3 -m pytest tests/ops/test_triton.py -q -p no:cacheprovider -rs -k "recurrence" \
  > "$O/rectriton_ops.log" 2>&1 &
timeout "$B" python3 -m pytest tests/ops/test_memory_read.py -q -p no:cacheprovider -rs --durations=5 \
  -k "triton-cuda and not segments and not bad_inputs and not long_slot" > "$O/readtriton_grads.log" 2>&1 &
wait
echo "tests (3 processes) $((SECONDS - T0)) s (budget $B)" | tee -a "$O/summary.log"
tail -n 2 "$O"/rectriton.log "$O"/rectriton_ops.log "$O"/readtriton_grads.log | tee -a "$O/summary.log"
tar czf "$OUT/l.tgz" -C "$O" .
cat "$O/summary.log"
