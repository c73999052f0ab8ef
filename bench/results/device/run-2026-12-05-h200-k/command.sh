#!/usr/bin/env bash
# The one device command of H200 run k (2026-12-05), from the repository root: OUT=/dir bash <this file>, with the
# wheels of pydantic 2.14.4, pydantic-core 2.50.5 (cp312), typing-inspection 0.4.5, annotated-types 0.8.0 and
# typing_extensions 4.16.0 in .whl/. Main at the session's start, after the two fixes of 2026-12-05 that run j's
# logs called for: reference.recurrence casts bias once (run j's one cuda failure, d64-B3-T3000-bf16-ref-cuda), and
# the compiled TBPTT step sees its position within the chunk (run j's inductor warned of 9 distinct sizes in 12
# steps under CUDA graphs). The op suite on cuda, the same trainer command as run j, then the op suite on triton,
# test by test (-v), faulthandler dumping stacks past 60 s, 4 Hypothesis examples per property.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=${DEADLINE_S:-570} SNAPSHOT="$OUT/k.tgz" MMREC_HYPOTHESIS_EXAMPLES=4
source bench/device_deadline.sh
PT="python3 -m pytest -v -p no:cacheprovider -rs --durations=10 -o faulthandler_timeout=60"
run build 80 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run optests_cuda 150 $PT tests/ops -k "cuda and not triton"
run trainer 110 python3 -m mmrec_model.train --stage pretrain --preset small --device cuda --max-steps 12 \
  --compile on --compile-mode reduce-overhead --set stages.pretrain.micro_batch_size=8 --seed 1 \
  --out /tmp/trainer_k --no-progress
find /tmp/trainer_k -name metrics.jsonl -exec cp {} "$O/trainer_metrics.jsonl" \;
triton_suites() {
  $PT tests/ops/test_memory_read.py -k "triton-cuda" > "$O/optests_triton_read.log" 2>&1 &
  $PT tests/ops/test_mdi.py tests/ops/test_triton.py -k "triton-cuda or (triton and cuda)" \
    > "$O/optests_triton_mdi.log" 2>&1 &
  $PT tests/ops/test_scan.py tests/ops/test_recurrence.py tests/ops/test_memory_update.py -k "triton-cuda" \
    > "$O/optests_triton_other.log" 2>&1 &
  wait
}
run optests_triton 260 bash -c "$(declare -f triton_suites); O=$O PT='$PT'; triton_suites"
(cd "$O" && tar czf "$SNAPSHOT" $(ls *.log *.jsonl 2>/dev/null))
cat "$O/summary.log"
for f in "$O"/optests_*.log; do echo "$f: $(grep -c PASSED "$f") passed, $(grep -c FAILED "$f") failed; $(tail -n 1 "$f")"; done
grep -h "FAILED\|Timeout\|most recent call first" "$O"/optests_*.log | head -20
grep -h -i "warning\|eager\|step 12\|done in" "$O/trainer.log" | head -6
