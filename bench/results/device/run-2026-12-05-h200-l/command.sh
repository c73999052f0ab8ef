#!/usr/bin/env bash
# The one device command of H200 run l (2026-12-05), from the repository root: OUT=/dir bash <this file>, with
# main's tree at this commit and the wheels of pydantic 2.14.4, pydantic-core 2.50.5 (cp312), typing-inspection
# 0.4.5, annotated-types 0.8.0 and typing_extensions 4.16.0 in .whl/, and two kernel variants never run before:
# .devsnap/prefetch.tar (branch device-pending/memory-update-prefetch: the cluster forward loads the next chunk's
# value, key and strength a chunk ahead) and kernels/cuda/{memory_update.cu,check.cuh} of e972fb3 in
# .devsnap/pairs/ (the 16-bit forward's per-chunk loops in column pairs). Builds the three as wheels side by side,
# times bench_cuda --ops memory_update on each (B=16 NC=256 S=64 D=1024 and the base model's B=1 NC=256 S=16
# D=768 at T=16,384), the CUDA self-check and the memory_update op suite on both variants, then an ncu profile of
# main's memory_update kernels at B=1 NC=256 S=16 D=768 bf16.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
O=/tmp/o; rm -rf "$O" /tmp/v /tmp/w /tmp/p; mkdir -p "$O" /tmp/v/main /tmp/v/prefetch
cp -r . /tmp/v/main 2>/dev/null; rm -rf /tmp/v/main/.devsnap /tmp/v/main/.whl
tar xf .devsnap/prefetch.tar -C /tmp/v/prefetch
cp -r /tmp/v/main /tmp/v/pairs && cp .devsnap/pairs/memory_update.cu .devsnap/pairs/check.cuh /tmp/v/pairs/kernels/cuda/
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=${DEADLINE_S:-560} SNAPSHOT="$OUT/l.tgz" MMREC_HYPOTHESIS_EXAMPLES=10
source bench/device_deadline.sh
WHEEL="python3 -m pip wheel --no-build-isolation --no-deps --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90"
builds() {
  for v in main prefetch pairs; do $WHEEL -w /tmp/w/$v /tmp/v/$v > "$O/build_$v.log" 2>&1 & done; wait
  for v in main prefetch pairs; do python3 -m pip install -q --no-deps --target /tmp/p/$v /tmp/w/$v/*.whl; done
  ls /tmp/p/*/mmrec_ops/_C*.so
}
run builds 200 bash -c "$(declare -f builds); O=$O WHEEL='$WHEEL'; builds"
for v in main prefetch pairs; do
  run bench_$v 60 env PYTHONPATH=/tmp/p/$v:/tmp/site python3 bench/bench_cuda.py --no-ref --ops memory_update \
    --out "$O/bench_$v.json"
done
for v in prefetch pairs; do
  run check_$v 30 env PYTHONPATH=/tmp/p/$v:/tmp/site python3 bench/check_cuda.py --ops memory_update
  run tests_$v 60 env PYTHONPATH=/tmp/p/$v:/tmp/site python3 -m pytest tests/ops/test_memory_update.py -q \
    -p no:cacheprovider -rs -k "cuda and not triton"
done
run ncu_main 90 env PYTHONPATH=/tmp/p/main:/tmp/site ncu --kernel-name regex:memory_update --launch-skip 2 \
  --launch-count 2 --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
  --section SchedulerStats --section MemoryWorkloadAnalysis python3 bench/results/device/run-2026-12-05-h200-l/one_update.py
cat "$O/summary.log"; grep -h -B1 -A14 "^op " "$O"/bench_*.log | grep -v "^--$"; tail -n 2 "$O"/check_*.log "$O"/tests_*.log
grep -E "memory_update_|Duration|Registers Per|Block Size|Grid Size|Achieved Occ|Stall|Warp Cycles Per Issued|No Eligible|Cluster" "$O/ncu_main.log" | head -60
