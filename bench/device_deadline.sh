# Sourced by a device run's command.sh (bench/results/device/run-*/command.sh). Needs O (the log folder) and
# DEADLINE_S (seconds from sourcing that the whole command may use).
# left: seconds before the deadline. run NAME BUDGET CMD...: runs CMD for at most BUDGET seconds and never past
# the deadline, its output in $O/NAME.log, its exit code and seconds appended to $O/summary.log.
START=$SECONDS
left() { echo $(( DEADLINE_S - (SECONDS - START) )); }
run() {
  local name=$1 budget=$2; shift 2
  local t=$(( budget < $(left) ? budget : $(left) ))
  if [ "$t" -lt 10 ]; then echo "$name skipped (deadline)" | tee -a "$O/summary.log"; return; fi
  local s=$SECONDS; timeout "$t" "$@" > "$O/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - s)) s (budget $t)" | tee -a "$O/summary.log"
}
