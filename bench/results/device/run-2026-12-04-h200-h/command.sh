#!/usr/bin/env bash
# The one device command of H200 run h (2026-12-04), from the repository root: OUT=/dir bash <this file>, with the
# wheels of pydantic 2.14.4, pydantic-core 2.50.5 (cp312), typing-inspection 0.4.5, annotated-types 0.8.0 and
# typing_extensions 4.16.0 in .whl/. Checks of main as it stands (4fe4008): the op suite on cuda and triton, four
# pytest processes side by side (Triton compiles each Hypothesis shape anew: 4 examples per property); the compiled
# training step (CUDA graphs) at T=1,024 for the three archs in one run; the trainer with gradient accumulation
# (micro-batches of 8) under CUDA graphs.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=560 SNAPSHOT="$OUT/h.tgz" MMREC_HYPOTHESIS_EXAMPLES=4
source bench/device_deadline.sh
run build 80 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
optests() {
  local pt="python3 -m pytest -q -p no:cacheprovider -rs --durations=5"
  $pt tests/ops -k "cuda and not triton" > "$O/optests_cuda.log" 2>&1 &
  $pt tests/ops/test_memory_read.py -k "triton-cuda" > "$O/optests_triton_read.log" 2>&1 &
  $pt tests/ops/test_mdi.py tests/ops/test_triton.py -k "triton-cuda or (triton and cuda)" \
    > "$O/optests_triton_mdi.log" 2>&1 &
  $pt tests/ops/test_scan.py tests/ops/test_recurrence.py tests/ops/test_memory_update.py -k "triton-cuda" \
    > "$O/optests_triton_other.log" 2>&1 &
  wait
}
run optests 190 bash -c "$(declare -f optests); O=$O; optests"
run throughput_1024 200 python3 bench/compare_models.py throughput --device cuda --compile on \
  --compile-mode reduce-overhead --sizes 1024 --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 \
  --archs mmrec-linear,mmrec,gpt --budget-s 195 --worker-timeout 90 --steps 5 \
  --out "$O/throughput_cuda_graphs_1024.json"
run trainer 70 python3 -m mmrec_model.train --stage pretrain --preset small --device cuda --max-steps 40 \
  --compile on --compile-mode reduce-overhead --set stages.pretrain.micro_batch_size=8 --seed 1 \
  --out /tmp/trainer_h --no-progress
find /tmp/trainer_h -name metrics.jsonl -exec cp {} "$O/trainer_metrics.jsonl" \;
(cd "$O" && tar czf "$SNAPSHOT" $(ls *.log *.json *.jsonl 2>/dev/null))
cat "$O/summary.log"; grep -h "tok/s" "$O"/throughput_*.log | sort -u
for f in "$O"/optests_*.log; do echo "$f: $(tail -n 1 "$f")"; done
grep -h -i "warning\|eager\|accumul\|fall" "$O/trainer.log" | head -10; tail -n 4 "$O/trainer.log"
