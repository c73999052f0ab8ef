#!/usr/bin/env bash
# The one device command of H200 run n (2026-12-05, afternoon), from the repository root: OUT=/dir bash <this file>,
# with main at this commit, the wheels of pydantic 2.14.4, pydantic-core 2.50.5 (cp312), typing-inspection 0.4.5,
# annotated-types 0.8.0 and typing_extensions 4.16.0 in .whl/, and four variants in .devsnap/: stream32 and stream24
# (kernels/cuda/scan.cu: the 16-bit forward on the streaming kernel, one channel per lane, 32 or 24 steps per
# thread: 177 / 127 registers), mu_refactor (kernels/cuda/memory_update.cu with one block_sum_slots for one or two
# vectors; same sums in the same order) and mr_rebuild (the Triton memory_read backward rebuilding each time chunk's
# banks from the chunk entries instead of reading mdi's [B, T, N, D] forward; Python only: main's build with
# kernels/triton/memory_read.py, backends/triton.py and bench/check_memory_read.py replaced).
# Timings alone on the GPU: bench_cuda --ops scan (main, stream32, stream24), --ops memory_update (main,
# mu_refactor), check_memory_read (main, mr_rebuild with --bank-sweep --profile). Then correctness side by side: the
# op suite on cuda (main), the memory_read triton suite on cuda (mr_rebuild), bench/profile_kernels.py (which ops
# launch the compiled linear step's copy kernels, main), check_cuda and the op's suite on the CUDA variants; then
# compute-sanitizer on the CUDA variants.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
O=/tmp/o; rm -rf "$O" /tmp/v /tmp/w /tmp/p; mkdir -p "$O" /tmp/v
cp -r . /tmp/v/main; rm -rf /tmp/v/main/.devsnap /tmp/v/main/.whl
VARS="stream32 stream24 mu_refactor"
for v in $VARS; do cp -r /tmp/v/main /tmp/v/$v && cp .devsnap/$v/*.cu /tmp/v/$v/kernels/cuda/; done
opof() { case $1 in mu_*) echo memory_update;; *) echo scan;; esac; }
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=${DEADLINE_S:-570} SNAPSHOT="$OUT/n.tgz" MMREC_HYPOTHESIS_EXAMPLES=4
SAN="compute-sanitizer --error-exitcode 9 --print-limit 20 --target-processes all"
command -v compute-sanitizer >/dev/null 2>&1 || SAN="/usr/local/cuda/bin/$SAN"
source bench/device_deadline.sh
WHEEL="python3 -m pip wheel --no-build-isolation --no-deps --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90"
builds() {
  for v in main $VARS; do $WHEEL -w /tmp/w/$v /tmp/v/$v > "$O/build_$v.log" 2>&1 & done; wait
  for v in main $VARS; do python3 -m pip install -q --no-deps --target /tmp/p/$v /tmp/w/$v/*.whl; done
  cp -r /tmp/p/main /tmp/p/mr_rebuild && cp .devsnap/mr_rebuild/memory_read.py /tmp/p/mr_rebuild/mmrec_ops/triton_kernels/ \
    && cp .devsnap/mr_rebuild/triton.py /tmp/p/mr_rebuild/mmrec_ops/backends/
  ls /tmp/p/*/mmrec_ops/_C*.so
}
run builds 170 bash -c "$(declare -f builds); O=$O WHEEL='$WHEEL' VARS='$VARS'; builds"
for v in main $VARS; do
  ops=scan; [ $v = main ] && ops=scan,memory_update; [ $v = mu_refactor ] && ops=memory_update
  run bench_$v 60 env PYTHONPATH=/tmp/p/$v:/tmp/site python3 bench/bench_cuda.py --no-ref --ops $ops \
    --out "$O/bench_$v.json"
done
run readcheck_main 60 env PYTHONPATH=/tmp/p/main:/tmp/site python3 bench/check_memory_read.py --profile
run readcheck_mr_rebuild 120 env PYTHONPATH=/tmp/p/mr_rebuild:/tmp/site python3 .devsnap/mr_rebuild/check_memory_read.py \
  --profile --bank-sweep
PT="python3 -m pytest -q -p no:cacheprovider -rs -o faulthandler_timeout=60"
side_by_side() {
  env PYTHONPATH=/tmp/p/main:/tmp/site $PT tests/ops -k "cuda and not triton" > "$O/optests_cuda.log" 2>&1 &
  env PYTHONPATH=/tmp/p/mr_rebuild:/tmp/site $PT tests/ops/test_memory_read.py tests/ops/test_triton.py \
    -k "triton-cuda or (triton and cuda)" > "$O/optests_triton_read_mr_rebuild.log" 2>&1 &
  env PYTHONPATH=/tmp/p/main:/tmp/site python3 bench/profile_kernels.py --arch mmrec-linear --T 1024 --batch 16 \
    --compile on --match copy --out "$O/launchers_linear_1024.json" > "$O/launchers.log" 2>&1 &
  for v in $VARS; do
    op=$(opof $v)
    (env PYTHONPATH=/tmp/p/$v:/tmp/site python3 bench/check_cuda.py --ops $op > "$O/check_$v.log" 2>&1;
     env PYTHONPATH=/tmp/p/$v:/tmp/site $PT tests/ops/test_$op.py -k "cuda and not triton" > "$O/tests_$v.log" 2>&1) &
  done
  wait
}
run side_by_side 230 bash -c "$(declare -f side_by_side opof); O=$O PT='$PT' VARS='$VARS'; side_by_side"
for v in $VARS; do
  P="env PYTHONPATH=/tmp/p/$v:/tmp/site"
  op=$(opof $v)
  run memcheck_$v 40 $P $SAN --tool memcheck python3 bench/check_cuda.py --small --ops $op
  run racecheck_$v 50 $P $SAN --tool racecheck python3 bench/check_cuda.py --small --ops $op
done
(cd "$O" && tar czf "$SNAPSHOT" $(ls *.log *.json 2>/dev/null))
cat "$O/summary.log"; for v in main $VARS; do echo "== $v"; grep -A24 "^op " "$O/bench_$v.log"; done
for f in "$O"/readcheck_*.log; do echo "== $f"; grep -A30 "^timing" "$f"; done
tail -n 2 "$O"/optests_*.log "$O"/check_*.log "$O"/tests_*.log "$O"/memcheck_*.log "$O"/racecheck_*.log
head -c 4000 "$O/launchers.log"
