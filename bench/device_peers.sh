#!/usr/bin/env bash
# One GPU call: build a wheel (kept in $OUT/wheel), then the steps named in STEPS: scan tests on cuda, the triton
# recurrence tests, the per-kernel profile, the peer benchmark. 
# Peers come from wheels in .whl/ (bench/results/peers/README.md lists them).
#     OUT=/some/dir bash bench/device_peers.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device_out}
mkdir -p "$OUT/wheel"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
: > "$OUT/summary.log"
step() {  # step NAME TIMEOUT_S CMD...
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  echo "=== $name: $*" | tee "$OUT/$name.log"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  printf '%-12s rc=%-4s %4ss\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$OUT/summary.log"
  return "$rc"
}
if ls "${WHEEL_DIR:-/nonexistent}"/*.whl >/dev/null 2>&1; then
  step install 60 python3 -m pip install -q --no-deps --force-reinstall "$WHEEL_DIR"/*.whl || exit 1
else
  step build 300 python3 -m pip wheel -q --no-build-isolation --no-deps -w "$OUT/wheel" \
    --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 . || exit 1
  step install 60 python3 -m pip install -q --no-deps --force-reinstall "$OUT"/wheel/*.whl || exit 1
fi
for s in ${STEPS:-scantests tritontests peers}; do
  case $s in
    profile) step profile 120 python3 bench/bench_cuda.py --profile --ops "${PROFILE_OPS:-scan}" ;;
    scantests) step scantests 150 python3 -m pytest tests/ops/test_scan.py tests/ops/test_contract.py -q \
      -p no:cacheprovider -k "scan and cuda-cuda" ;;
    tritontests) step tritontests 150 python3 -m pytest tests/ops/test_recurrence.py -q -p no:cacheprovider \
      -k triton-cuda ;;
    peers) step peers "${PEERS_TIMEOUT:-300}" python3 bench/bench_peers.py --out "$OUT/peers.json" ${PEERS_ARGS:-} ;;
  esac
done
cat "$OUT/summary.log"
