#!/usr/bin/env bash
# The one device command of H200 run f (2026-12-04), from the repository root: OUT=/dir bash <this file>, with the
# wheels of pydantic 2.14.4, pydantic-core 2.50.5 (cp312), typing-inspection 0.4.5, annotated-types 0.8.0 and
# typing_extensions 4.16.0 in .whl/. The Triton read takes q, v (token stride) and Ms (batch stride) in place, dx_m
# in the inputs' dtype, and the block's in-projection runs as two GEMMs (16-aligned rows): the read's and mdi's op
# suites on triton/cuda; the compiled training step (CUDA graphs) at T=1,024 for the three archs; the trainer with
# gradient accumulation under CUDA graphs and eagerly (same seed); the 262,144-token sweep row; bench_cuda.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=570
source bench/device_deadline.sh
run build 90 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run throughput_1024 170 python3 bench/compare_models.py throughput --device cuda --compile on \
  --compile-mode reduce-overhead --sizes 1024 --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 \
  --archs mmrec-linear,mmrec,gpt --budget-s 165 --worker-timeout 75 --steps 5 \
  --out "$O/throughput_cuda_graphs_1024.json"
for mode in reduce-overhead off; do
  compile=$([ $mode = off ] && echo off || echo on)
  run "trainer_$mode" 45 python3 -m mmrec_model.train --stage pretrain --preset small --device cuda --max-steps 40 \
    --compile $compile --compile-mode reduce-overhead --set stages.pretrain.micro_batch_size=8 --seed 1 \
    --out "$O/trainer_$mode" --no-progress
done
run sweep_262144 60 python3 bench/compare_models.py throughput --device cuda --compile on \
  --compile-mode reduce-overhead --sizes 1024 --tokens-per-step 262144 --micro-tokens 131072 --dtype bf16 \
  --archs mmrec --budget-s 58 --worker-timeout 56 --steps 3 --out "$O/throughput_sweep_262144.json"
run bench_cuda 40 python3 bench/bench_cuda.py --no-ref --out "$O/bench_cuda.json"
run readtests 200 python3 -m pytest tests/ops/test_memory_read.py tests/ops/test_mdi.py tests/ops/test_triton.py -q \
  -p no:cacheprovider -rs --durations=5 -k "triton-cuda or cuda-cuda or (triton and (memory_read or mdi or sliced))"
mkdir -p "$O/logs"; cp "$O"/*.log "$O"/*.json "$O/logs/" 2>/dev/null
for mode in reduce-overhead off; do find "$O/trainer_$mode" -name metrics.jsonl -exec cp {} "$O/logs/trainer_${mode}_metrics.jsonl" \; ; done
tar czf "$OUT/f.tgz" -C "$O/logs" .
ls -la "$OUT"; cat "$O/summary.log"; grep -h "tok/s" "$O"/throughput_*.log "$O"/sweep_*.log | sort -u
grep -h -i "warning\|eager\|accumulation\|loss" "$O"/trainer_*.log | head -20; tail -n 3 "$O/readtests.log"
