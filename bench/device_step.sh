# Sourced by the device scripts (device_run.sh, device_models.sh). Needs OUT set.
# step NAME TIMEOUT_S CMD...: runs CMD with a timeout, tees its output to $OUT/NAME.log, appends its exit code
# and seconds to $OUT/summary.log, returns CMD's exit code.
step() {
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "=== $name: $*" | tee "$OUT/$name.log"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  printf '%-12s rc=%-4s %4ss\n' "$name" "$rc" "$((SECONDS - t0))" | tee -a "$OUT/summary.log"
  return "$rc"
}
