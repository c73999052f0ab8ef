#!/usr/bin/env bash
# The one device command of run r (2026-12-06), from the repository root: OUT=/dir bash <this file>, with the tree at
# this commit (the Triton memory_read forward loading token t+1's inputs while computing token t's; its backward
# loading the banks once as one [L, N, dh] tile) and the wheels of run n's header in .whl/.
# Builds the tree; runs the op suite's memory_read tests on cuda (the cuda and triton backends) and, beside them,
# the compiled training step (reduce-overhead) of MM-Rec linear and the GPT at T=1,024, B=16 (the read's kernels
# were profiled in run q).
# Writes at most 8 files to $OUT (the tool's limit): r.tgz (every log and JSON), summary and the timing logs.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
O=/tmp/o; rm -rf "$O" /tmp/v /tmp/w /tmp/p; mkdir -p "$O" /tmp/v
cp -r . /tmp/v/main; rm -rf /tmp/v/main/.devsnap /tmp/v/main/.whl
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=${DEADLINE_S:-290} SNAPSHOT="$OUT/r.tgz"
source bench/device_deadline.sh
build() {
  python3 -m pip wheel --no-build-isolation --no-deps --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 \
    -w /tmp/w/main /tmp/v/main && python3 -m pip install -q --no-deps --target /tmp/p/main /tmp/w/main/*.whl \
    && ls /tmp/p/main/mmrec_ops/_C*.so
}
run build 170 bash -c "$(declare -f build); build"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$O/summary.log"
export PYTHONPATH=/tmp/p/main:/tmp/site
# the tests compile Triton kernels on the CPUs; the training step runs on the GPU with CUDA graphs
run tests_memory_read 230 python3 -m pytest -q -p no:cacheprovider -rs -o faulthandler_timeout=60 \
  tests/ops/test_memory_read.py -k "cuda" &
run throughput_1024 200 python3 bench/compare_models.py throughput --device cuda --compile on \
  --compile-mode reduce-overhead --sizes 1024 --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --steps 5 \
  --archs mmrec-linear,gpt --budget-s 195 --worker-timeout 100 --out "$O/throughput_1024.json"
wait
(cd "$O" && tar czf "$SNAPSHOT" $(ls *.log *.json 2>/dev/null))
cp "$O/summary.log" "$O"/throughput_1024.log "$O"/tests_memory_read.log "$OUT/" 2>/dev/null
cat "$O/summary.log"; tail -n 4 "$O"/tests_memory_read.log
grep -h "tok/s\|TIMEOUT\|rror" "$O"/throughput_1024.log | sort -u
