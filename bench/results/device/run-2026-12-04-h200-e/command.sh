#!/usr/bin/env bash
# The one device command of H200 run e (2026-12-04), from the repository root: OUT=/dir bash <this file>, with the
# wheels of pydantic 2.14.4, pydantic-core 2.50.5 (cp312), typing-inspection 0.4.5, annotated-types 0.8.0 and
# typing_extensions 4.16.0 in .whl/. Issue 15's rows not yet measured with the current kernels: the compiled
# training step (CUDA graphs) at T=4,096 for the three archs; the nonlinear variant's batch sweep at T=1,024
# (65,536 / 131,072 / 262,144 tokens per step); the four ops' cuda kernels in float32 and bf16 (bench_cuda); and
# the trainer itself under CUDA graphs (all three stages, small preset, a few steps each).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=575
source bench/device_deadline.sh
run build 90 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run trainer 100 python3 -m mmrec_model.train --stage all --preset small --device cuda --max-steps 30 \
  --out "$O/trainer_run" --no-progress
run throughput_4096 150 python3 bench/compare_models.py throughput --device cuda --compile on \
  --compile-mode reduce-overhead --sizes 4096 --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 \
  --archs mmrec-linear,mmrec,gpt --budget-s 145 --worker-timeout 70 --steps 3 \
  --out "$O/throughput_cuda_graphs_4096.json"
for tokens in 65536 131072 262144; do
  micro=$(( tokens < 131072 ? tokens : 131072 ))
  run "sweep_$tokens" 70 python3 bench/compare_models.py throughput --device cuda --compile on \
    --compile-mode reduce-overhead --sizes 1024 --tokens-per-step $tokens --micro-tokens $micro --dtype bf16 \
    --archs mmrec --budget-s 68 --worker-timeout 66 --steps 3 --out "$O/throughput_sweep_$tokens.json"
done
run bench_cuda 120 python3 bench/bench_cuda.py --no-ref --out "$O/bench_cuda.json"
rm -rf "$O/trainer_run"/*/checkpoint* "$O/trainer_run"/*/*.safetensors
tar czf "$OUT/e.tgz" -C "$O" .
cat "$O/summary.log"; grep -h "tok/s" "$O"/throughput_*.log "$O"/sweep_*.log; tail -n 12 "$O/trainer.log"
grep -B2 -A8 "Error" "$O"/throughput_4096.log "$O"/sweep_*.log | head -30
