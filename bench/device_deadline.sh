# Sourced by a device run's command.sh (bench/results/device/run-*/command.sh). Needs O (the log folder) and
# DEADLINE_S (seconds from sourcing that the whole command may use); SNAPSHOT, if set, a tarball path (under $OUT).
# left: seconds before the deadline. run NAME BUDGET CMD...: runs CMD for at most BUDGET seconds and never past
# the deadline (then SIGTERM, and SIGKILL 10 s later: the trainer finishes its step and saves on SIGTERM), its
# output in $O/NAME.log, its exit code and seconds appended to $O/summary.log; then the logs and JSONs of $O so far
# go to $SNAPSHOT, so that a command stopped at the call's limit still returns the steps it finished.
START=$SECONDS
left() { echo $(( DEADLINE_S - (SECONDS - START) )); }
run() {
  local name=$1 budget=$2; shift 2
  local t=$(( budget < $(left) ? budget : $(left) ))
  if [ "$t" -lt 10 ]; then echo "$name skipped (deadline)" | tee -a "$O/summary.log"; return; fi
  local s=$SECONDS; timeout -k 10 "$t" "$@" > "$O/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - s)) s (budget $t)" | tee -a "$O/summary.log"
  if [ -n "${SNAPSHOT:-}" ]; then (cd "$O" && tar czf "$SNAPSHOT" $(ls *.log *.json *.jsonl 2>/dev/null)); fi
}
