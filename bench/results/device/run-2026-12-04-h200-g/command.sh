#!/usr/bin/env bash
# The one device command of H200 run g (2026-12-04), from the repository root: OUT=/dir bash <this file>, with the
# wheels of pydantic 2.14.4, pydantic-core 2.50.5 (cp312), typing-inspection 0.4.5, annotated-types 0.8.0 and
# typing_extensions 4.16.0 in .whl/. Run f's steps (it ran past the call's limit and returned nothing) with the
# read's forward as token tiles: the read's accuracy check and kernel sweep (forward token loop against token
# tiles), the op suites of memory_read and mdi on triton (q, v, Ms read in place; dx_m in bf16), the compiled
# training step (CUDA graphs) at T=1,024 for the three archs, bench_cuda (the four ops, float32 and bf16), and the
# 262,144-token sweep row (gradient accumulation under CUDA graphs).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=520 SNAPSHOT="$OUT/g.tgz"
source bench/device_deadline.sh
run build 70 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run readcheck 80 python3 bench/check_memory_read.py --sweep
run throughput_1024 150 python3 bench/compare_models.py throughput --device cuda --compile on \
  --compile-mode reduce-overhead --sizes 1024 --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 \
  --archs mmrec-linear,mmrec,gpt --budget-s 145 --worker-timeout 70 --steps 5 \
  --out "$O/throughput_cuda_graphs_1024.json"
run bench_cuda 30 python3 bench/bench_cuda.py --no-ref --out "$O/bench_cuda.json"
run readtests 130 python3 -m pytest tests/ops/test_memory_read.py tests/ops/test_mdi.py tests/ops/test_triton.py -q \
  -p no:cacheprovider -rs --durations=5 -k "triton-cuda or (triton and (memory_read or mdi or sliced))"
run sweep_262144 60 python3 bench/compare_models.py throughput --device cuda --compile on \
  --compile-mode reduce-overhead --sizes 1024 --tokens-per-step 262144 --micro-tokens 131072 --dtype bf16 \
  --archs mmrec --budget-s 58 --worker-timeout 56 --steps 3 --out "$O/throughput_sweep_262144.json"
cat "$O/summary.log"; grep -h "tok/s" "$O"/throughput_*.log "$O"/sweep_*.log | sort -u
grep -A30 "timing bf16" "$O/readcheck.log"; tail -n 3 "$O/readtests.log"
