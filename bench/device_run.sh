#!/usr/bin/env bash
# One command on a GPU machine: build with CUDA, run the op test suite, the long-shape self-check, compute-sanitizer
# (memcheck, racecheck) on one tiny call per kernel, and the benchmark. Run from anywhere:
#     OUT=/some/dir bash bench/device_run.sh
# Every step is teed to $OUT/<step>.log; $OUT/summary.log lists each step's exit code and seconds; the benchmark
# JSON goes to $OUT/bench_cuda.json. Expected ~7 minutes; the step timeouts add up to 9.5 minutes.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export MMREC_CUDA=ON
: > "$OUT/summary.log"

step() {  # step NAME TIMEOUT_S CMD...: runs CMD with a timeout, tees its output, records rc and time
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "=== $name: $*" | tee "$OUT/$name.log"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  printf '%-12s rc=%-4s %4ss\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$OUT/summary.log"
  return "$rc"
}

step env 30 bash -c "nvidia-smi; nvcc --version; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'"
# sm_90 only here (the H100): halves the nvcc time; the sm_80 + sm_90 build is the default elsewhere.
if ! step build 240 $PY -m pip install --no-build-isolation --no-deps -v \
    --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .; then
  echo "build failed: see $OUT/build.log" | tee -a "$OUT/summary.log"
  exit 1
fi
step import 60 $PY -c "import mmrec_ops; from mmrec_ops import backends; from mmrec_ops import _native; \
print('has_cuda', _native.C.has_cuda, 'devices', _native.C.cuda_device_count()); print(mmrec_ops.available_backends())"
step check 100 $PY bench/check_cuda.py
# cuda-backend cases only (ids "<op>-cuda-cuda"); --maxfail instead of -x: one device run should show every failure
step tests 150 $PY -m pytest tests/ops -q -p no:cacheprovider --maxfail=25 -k cuda-cuda
step bench 180 $PY bench/bench_cuda.py --out "$OUT/bench_cuda.json"
SAN="compute-sanitizer --error-exitcode 9 --print-limit 20 --target-processes all"
if command -v compute-sanitizer >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
  command -v compute-sanitizer >/dev/null 2>&1 || SAN="/usr/local/cuda/bin/$SAN"
  step memcheck 90 $SAN --tool memcheck $PY bench/check_cuda.py --small
  step racecheck 90 $SAN --tool racecheck $PY bench/check_cuda.py --small
else
  echo "compute-sanitizer not found" | tee -a "$OUT/summary.log"
fi
echo "=== summary"
cat "$OUT/summary.log"
