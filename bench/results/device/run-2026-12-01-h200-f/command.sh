#!/usr/bin/env bash
# The one device command of H200 run f (2026-12-01), from the repository root: OUT=/dir bash <this file>.
# compute-sanitizer (memcheck, racecheck) on the recurrence's latency kernels (d = 32, 64, 128; f32 and bf16),
# ncu of the d = 64 forward/backward kernels, the memory_read op suite on cuda and triton (three pytest processes at
# once: the Triton compiles are CPU-bound), and the model-level training throughput at T = 16,384, B = 1 (eager).
# Every step has a time budget inside one 540 s deadline; logs and JSONs go to $O, packed into $OUT/f.tgz.
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON
START=$SECONDS
left() { echo $(( 540 - (SECONDS - START) )); }
run() {  # run NAME BUDGET CMD...: at most BUDGET seconds and never past the deadline
  local name=$1 budget=$2; shift 2
  local t=$(( budget < $(left) ? budget : $(left) ))
  if [ "$t" -lt 10 ]; then echo "$name skipped (deadline)" | tee -a "$O/summary.log"; return; fi
  local s=$SECONDS; timeout "$t" "$@" > "$O/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $((SECONDS - s)) s (budget $t)" | tee -a "$O/summary.log"
}
SAN="compute-sanitizer --error-exitcode 9 --print-limit 20 --target-processes all"
command -v compute-sanitizer >/dev/null 2>&1 || SAN="/usr/local/cuda/bin/$SAN"
NCU=ncu; command -v ncu >/dev/null 2>&1 || NCU=/usr/local/cuda/bin/ncu
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run memcheck 60 $SAN --tool memcheck python3 bench/check_cuda.py --small --ops recurrence
run racecheck 60 $SAN --tool racecheck python3 bench/check_cuda.py --small --ops recurrence
# one bf16 and one f32 fwd+bwd at B=16 T=1024 D=768 H=12 (d = 64): stall reasons of the latency kernels
cat > /tmp/prof_rec.py <<'PY'
import torch, mmrec_ops
for dt in (torch.bfloat16, torch.float32):
    B, T, D, H = 16, 1024, 768, 12
    z = torch.randn(B, T, D, device="cuda", dtype=dt, requires_grad=True)
    g = torch.rand(B, T, D, device="cuda", dtype=dt).mul(0.5).add(0.5).requires_grad_()
    w = (torch.randn(H, D // H, D // H, device="cuda", dtype=dt) / 8).requires_grad_()
    b = torch.zeros(D, device="cuda", dtype=dt, requires_grad=True)
    for _ in range(2):
        mmrec_ops.recurrence(z, g, w, b, None).sum().backward()
torch.cuda.synchronize()
PY
run ncu 90 $NCU --clock-control none -k "regex:(fwd|bwd).*kernel" -c 8 --section SpeedOfLight --section WarpStateStats \
  --section SchedulerStats --section LaunchStats --section Occupancy python3 /tmp/prof_rec.py
run eager16k 150 python3 bench/compare_models.py throughput --device cuda --compile off --sizes 16384 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --archs mmrec,mmrec-linear,gpt --budget-s 140 \
  --worker-timeout 70 --out "$O/throughput_cuda_eager_16k.json"
# memory_read op suite: the cuda backend, then the triton backend in two halves, three processes at once
T0=$SECONDS; B=$(( $(left) - 15 ))
for sel in "cuda-cuda" "triton-cuda and (segments or bad_inputs)" "triton-cuda and not segments and not bad_inputs"; do
  n=readtests_$(echo "$sel" | tr -c 'a-z\n' '_' | cut -c1-40)
  timeout "$B" python3 -m pytest tests/ops/test_memory_read.py -q -p no:cacheprovider -rs -k "$sel" > "$O/$n.log" 2>&1 &
done
wait
echo "readtests (3 processes) $((SECONDS - T0)) s (budget $B)" | tee -a "$O/summary.log"
tail -n 3 "$O"/readtests_*.log | tee -a "$O/summary.log"
tar czf "$OUT/f.tgz" -C "$O" .
cat "$O/summary.log"
