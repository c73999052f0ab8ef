#!/usr/bin/env bash
# The one device command of run q (2026-12-06), from the repository root: OUT=/dir bash <this file>, with main at
# this commit, the wheels of run n's header in .whl/ and .devsnap/mr_prefetch/memory_read.py (branch mr-prefetch:
# the Triton forward, carry_map and bank backward loading token t+1's inputs while computing token t's; the read's
# backward loading the banks once as one [L, N, dh] tile).
# Builds main; times memory_read on main (check_memory_read --skip-check --profile) and on mr_prefetch (accuracy
# check, profile, sweeps of the forward / backward / bank-backward blocks); runs the op suite's memory_read tests on
# cuda (triton and cuda backends) with mr_prefetch's kernels.
# Writes at most 8 files to $OUT (the tool's limit): q.tgz (every log), summary and the timing logs.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
O=/tmp/o; rm -rf "$O" /tmp/v /tmp/w /tmp/p; mkdir -p "$O" /tmp/v
cp -r . /tmp/v/main; rm -rf /tmp/v/main/.devsnap /tmp/v/main/.whl
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=${DEADLINE_S:-560} SNAPSHOT="$OUT/q.tgz"
source bench/device_deadline.sh
build() {
  python3 -m pip wheel --no-build-isolation --no-deps --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 \
    -w /tmp/w/main /tmp/v/main && python3 -m pip install -q --no-deps --target /tmp/p/main /tmp/w/main/*.whl \
    && cp -r /tmp/p/main /tmp/p/mr_prefetch \
    && cp .devsnap/mr_prefetch/memory_read.py /tmp/p/mr_prefetch/mmrec_ops/triton_kernels/ && ls /tmp/p/*/mmrec_ops/_C*.so
}
run build 170 bash -c "$(declare -f build); build"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$O/summary.log"
run readcheck_main 50 env PYTHONPATH=/tmp/p/main:/tmp/site python3 bench/check_memory_read.py --skip-check --profile
run readcheck_mr_prefetch 150 env PYTHONPATH=/tmp/p/mr_prefetch:/tmp/site python3 bench/check_memory_read.py \
  --profile --sweep --bank-sweep
# the tests import mmrec_ops from PYTHONPATH: mr_prefetch's package first
run tests_mr_prefetch 150 env PYTHONPATH=/tmp/p/mr_prefetch:/tmp/site python3 -m pytest -q -p no:cacheprovider \
  tests/ops/test_memory_read.py -k "cuda"
(cd "$O" && tar czf "$SNAPSHOT" $(ls *.log *.json 2>/dev/null))
cp "$O/summary.log" "$O"/readcheck_*.log "$OUT/" 2>/dev/null
cat "$O/summary.log"; tail -n 45 "$O"/readcheck_*.log; tail -n 5 "$O"/tests_*.log
