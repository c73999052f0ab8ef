#!/usr/bin/env bash
# The one device command of run p (2026-12-06), from the repository root: OUT=/dir bash <this file>, with main at
# this commit (the scan stream24 and memory_update refactor of run n landed) and run n's wheels in .whl/.
# Builds main; the op suite on cuda and on triton; check_cuda on every op; compute-sanitizer memcheck and racecheck
# on scan and memory_update (the two kernels that changed). At most 8 files to $OUT: p.tgz (every log) and summary.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
O=/tmp/o; rm -rf "$O" /tmp/v /tmp/w /tmp/p; mkdir -p "$O" /tmp/v
cp -r . /tmp/v/main; rm -rf /tmp/v/main/.devsnap /tmp/v/main/.whl
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=${DEADLINE_S:-420} SNAPSHOT="$OUT/p.tgz" MMREC_HYPOTHESIS_EXAMPLES=4
SAN="compute-sanitizer --error-exitcode 9 --print-limit 20 --target-processes all"
command -v compute-sanitizer >/dev/null 2>&1 || SAN="/usr/local/cuda/bin/$SAN"
source bench/device_deadline.sh
run build 150 bash -c "python3 -m pip wheel --no-build-isolation --no-deps \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 -w /tmp/w/main /tmp/v/main \
  && python3 -m pip install -q --no-deps --target /tmp/p/main /tmp/w/main/*.whl && ls /tmp/p/main/mmrec_ops/_C*.so"
P="env PYTHONPATH=/tmp/p/main:/tmp/site"
PT="python3 -m pytest -q -p no:cacheprovider -rs -o faulthandler_timeout=60"
suites() {
  $P $PT tests/ops -k "cuda and not triton" > "$O/optests_cuda.log" 2>&1 &
  $P $PT tests/ops -k "triton and cuda" > "$O/optests_triton.log" 2>&1 &
  $P python3 bench/check_cuda.py > "$O/check_cuda.log" 2>&1 &
  wait
}
run suites 200 bash -c "$(declare -f suites); O=$O P='$P' PT='$PT'; suites"
for op in scan memory_update; do
  run memcheck_$op 40 $P $SAN --tool memcheck python3 bench/check_cuda.py --small --ops $op
  run racecheck_$op 50 $P $SAN --tool racecheck python3 bench/check_cuda.py --small --ops $op
done
(cd "$O" && tar czf "$SNAPSHOT" $(ls *.log 2>/dev/null)); cp "$O/summary.log" "$OUT/"
cat "$O/summary.log"; tail -n 3 "$O"/optests_*.log "$O"/check_cuda.log "$O"/memcheck_*.log "$O"/racecheck_*.log
grep -h "^FAILED\|^ERROR\|^fail" "$O"/*.log | head -20
