#!/usr/bin/env bash
# The one device command of H200 run k (2026-12-04), from the repository root: OUT=/dir bash <this file>, with the
# wheels of pydantic 2.14.4, pydantic-core 2.50.5 (cp312), typing-inspection 0.4.5, annotated-types 0.8.0 and
# typing_extensions 4.16.0 in .whl/. memory_update's forward in column pairs for 16-bit types: its op suite on
# cuda, the CUDA self-check, bench_cuda (float32 and bf16, called and replayed from a CUDA graph).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=${DEADLINE_S:-130} SNAPSHOT="$OUT/k.tgz" MMREC_HYPOTHESIS_EXAMPLES=10
source bench/device_deadline.sh
run build 60 python3 -m pip install --no-build-isolation --no-deps \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run bench_cuda 25 python3 bench/bench_cuda.py --no-ref --ops memory_update --out "$O/bench_cuda.json"
run check 20 python3 bench/check_cuda.py --ops memory_update
run tests 25 python3 -m pytest tests/ops/test_memory_update.py -q -p no:cacheprovider -rs -k "cuda and not triton"
cat "$O/summary.log"; grep -A8 "^op " "$O/bench_cuda.log"; tail -n 2 "$O/check.log" "$O/tests.log"
