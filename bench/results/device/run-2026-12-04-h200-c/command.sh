#!/usr/bin/env bash
# The one device command of H200 run c (2026-12-04), from the repository root: OUT=/dir bash <this file>, with the
# wheels of pydantic 2.14.4, pydantic-core 2.50.5 (cp312), typing-inspection 0.4.5, annotated-types 0.8.0 and
# typing_extensions 4.16.0 in .whl/, and the committed kernels/cpu/recurrence.cpp in .devsnap/ (another session
# was editing it). The read's op suite on cuda and triton (the backward kernel of run a); then the compiled
# training step at T=1,024 with mode="reduce-overhead" (CUDA graphs) for the GPT and both MM-Rec variants (the
# Triton ops' constants now made on another thread, outside the graphs' memory pool).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=570
source bench/device_deadline.sh
cp .devsnap/recurrence.cpp kernels/cpu/recurrence.cpp
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run throughput_graphs 200 python3 bench/compare_models.py throughput --device cuda --compile on \
  --compile-mode reduce-overhead --sizes 1024 --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 \
  --archs mmrec-linear,mmrec,gpt --budget-s 190 --worker-timeout 100 \
  --out "$O/throughput_cuda_graphs_1024.json"
run readtests 260 python3 -m pytest tests/ops/test_memory_read.py tests/ops/test_triton.py -q -p no:cacheprovider \
  -rs --durations=5 -k "triton-cuda or cuda-cuda or (triton and memory_read)"
tar czf "$OUT/c.tgz" -C "$O" .
ls -la "$OUT"; cat "$O/summary.log"; grep "tok/s" "$O/throughput_graphs.log"; grep -B2 -A8 "Error" "$O/throughput_graphs.log" | head -40
tail -n 8 "$O/readtests.log"
