#!/usr/bin/env bash
# One command on a GPU machine: build with CUDA, run the op test suite, the long-shape self-check, compute-sanitizer
# (memcheck, racecheck) on one tiny call per kernel, and the benchmark; STEPS picks steps (also: tritontests, the op
# suite on the triton backend; rectests/recbench, the recurrence's cuda tests and per-step latency table;
# readtests/readcheck/readmemcheck/readtriton/readsweep, memory_read; modeltests/decodebench, the model on CUDA;
# and peers, bench/bench_peers.py). Run from anywhere:
#     OUT=/some/dir [STEPS="check bench"] bash bench/device_run.sh
# Every step is teed to $OUT/<step>.log; $OUT/summary.log lists each step's exit code and seconds; the benchmark
# JSON goes to $OUT/bench_cuda.json. Expected ~7 minutes; the step timeouts add up to 9.5 minutes.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export MMREC_CUDA=ON PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then  # the peers' wheels, for the peers step (bench/results/peers/README.md)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
: > "$OUT/summary.log"

source bench/device_step.sh

step env 30 bash -c "nvidia-smi; nvcc --version; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'"
# sm_90 only here (the H100): halves the nvcc time; the sm_80 + sm_90 build is the default elsewhere.
if ! step build 240 $PY -m pip install --no-build-isolation --no-deps -v \
    --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .; then
  echo "build failed: see $OUT/build.log" | tee -a "$OUT/summary.log"
  exit 1
fi
STEPS=${STEPS:-import check tests bench memcheck racecheck}
SAN="compute-sanitizer --error-exitcode 9 --print-limit 20 --target-processes all"
command -v compute-sanitizer >/dev/null 2>&1 || SAN="/usr/local/cuda/bin/$SAN"
for s in $STEPS; do
  case $s in
    import) step import 60 $PY -c "import torch, mmrec_ops; from mmrec_ops import _C; \
print('has_cuda', _C.has_cuda, 'devices', torch.cuda.device_count()); print(mmrec_ops.available_backends())" ;;
    check) step check 150 $PY bench/check_cuda.py ;;
    # cuda-backend cases only (ids "<op>-cuda-cuda"); --maxfail instead of -x: one run should show every failure
    tests) step tests 300 $PY -m pytest tests/ops -q -p no:cacheprovider --maxfail=25 -k cuda-cuda ;;
    scantests) step scantests 150 $PY -m pytest tests/ops/test_scan.py tests/ops/test_contract.py -q \
      -p no:cacheprovider -k "scan and cuda-cuda" ;;
    # issue 16: the recurrence's cuda op suite (every latency-kernel variant) and its per-step latency table
    rectests) step rectests 300 $PY -m pytest tests/ops/test_recurrence.py -q -p no:cacheprovider --maxfail=25 \
      -k "recurrence and cuda-cuda" ;;
    recbench) step recbench 300 $PY bench/bench_recurrence_latency.py --out "$OUT/recurrence_latency.json" ;;
    profile) step profile 120 $PY bench/bench_cuda.py --profile --ops "${PROFILE_OPS:-scan}" ;;
    tritontests) step tritontests 420 $PY -m pytest tests/ops -q -p no:cacheprovider --maxfail=25 -k triton-cuda ;;
    bench) step bench 200 $PY bench/bench_cuda.py --out "$OUT/bench_cuda.json" ;;
    memcheck) step memcheck 90 $SAN --tool memcheck $PY bench/check_cuda.py --small ;;
    racecheck) step racecheck 90 $SAN --tool racecheck $PY bench/check_cuda.py --small ;;
    # memory_read (op 5): its op suite on cuda and triton, the float64 check and timing against mdi + unfused read
    readtests) step readtests 240 $PY -m pytest tests/ops/test_memory_read.py -q -p no:cacheprovider --maxfail=10 \
      -k "cuda-cuda or triton-cuda" ;;
    readcheck) step readcheck 150 $PY bench/check_memory_read.py ;;
    # the triton memory_read at time chunks of 1..16 tokens and bf16/fp16 I/O; then its timing at 6 chunk pairs
    readtriton) step readtriton 240 $PY -m pytest tests/ops/test_triton.py -q -p no:cacheprovider -k memory_read ;;
    readsweep) step readsweep 240 $PY bench/check_memory_read.py --sweep --skip-check ;;
    readmemcheck) step readmemcheck 120 $SAN --tool memcheck $PY bench/check_memory_read.py --B 1 --T 70 --D 64 \
      --heads 2 --N 2 --S 3 --C 16 ;;
    # the model on CUDA (fused read, CUDA-graph decode against eager decode)
    modeltests) step modeltests 240 $PY -m pytest tests/model -q -p no:cacheprovider --maxfail=10 -k cuda ;;
    decodebench) step decodebench 200 $PY bench/bench_decode.py --device cuda --preset base --dtype bfloat16 \
      --models mmrec-nonlinear,mmrec-linear,gpt --contexts 1024,16384 --batches 1,64 --tokens 256 \
      --json "$OUT/decode_cuda.json" ;;
    peers) step peers "${PEERS_TIMEOUT:-300}" $PY bench/bench_peers.py --out "$OUT/peers.json" ${PEERS_ARGS:-} ;;
  esac
done
echo "=== summary"
cat "$OUT/summary.log"
