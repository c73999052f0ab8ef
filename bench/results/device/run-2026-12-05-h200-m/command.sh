#!/usr/bin/env bash
# The one device command of H200 run m (2026-12-05), from the repository root: OUT=/dir bash <this file>, with main
# at this commit (memory_update's forward with the next chunk prefetched, run l), the wheels of pydantic 2.14.4,
# pydantic-core 2.50.5 (cp312), typing-inspection 0.4.5, annotated-types 0.8.0 and typing_extensions 4.16.0 in
# .whl/, and three variants of kernels/cuda/{memory_update.cu,check.cuh} in .devsnap/: pairs2 (the 16-bit forward's
# per-chunk update loop in column pairs), bwd2 (the backward's strength loaded a chunk ahead and its two per-chunk
# block sums in one reduction: one barrier instead of three) and all (both). Builds the four as wheels side by
# side; bench_cuda --ops memory_update on each; the CUDA self-check, the memory_update op suite and
# compute-sanitizer (memcheck, racecheck) on `all` (its float32 forward is main's kernel); then the compiled
# training step (CUDA graphs) of MM-Rec linear and the GPT at T=16,384, B=1 on `all` if its suite passed (else
# main), the shape where memory_update's sequential chunks cost most.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
O=/tmp/o; rm -rf "$O" /tmp/v /tmp/w /tmp/p; mkdir -p "$O" /tmp/v
cp -r . /tmp/v/main; rm -rf /tmp/v/main/.devsnap /tmp/v/main/.whl
for v in pairs2 bwd2 all; do
  cp -r /tmp/v/main /tmp/v/$v && cp .devsnap/$v/memory_update.cu .devsnap/$v/check.cuh /tmp/v/$v/kernels/cuda/
done
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=${DEADLINE_S:-560} SNAPSHOT="$OUT/m.tgz" MMREC_HYPOTHESIS_EXAMPLES=10
SAN="compute-sanitizer --error-exitcode 9 --print-limit 20 --target-processes all"
command -v compute-sanitizer >/dev/null 2>&1 || SAN="/usr/local/cuda/bin/$SAN"
source bench/device_deadline.sh
WHEEL="python3 -m pip wheel --no-build-isolation --no-deps --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90"
builds() {
  for v in main pairs2 bwd2 all; do $WHEEL -w /tmp/w/$v /tmp/v/$v > "$O/build_$v.log" 2>&1 & done; wait
  for v in main pairs2 bwd2 all; do python3 -m pip install -q --no-deps --target /tmp/p/$v /tmp/w/$v/*.whl; done
  ls /tmp/p/*/mmrec_ops/_C*.so
}
run builds 170 bash -c "$(declare -f builds); O=$O WHEEL='$WHEEL'; builds"
for v in main pairs2 bwd2 all; do
  run bench_$v 60 env PYTHONPATH=/tmp/p/$v:/tmp/site python3 bench/bench_cuda.py --no-ref --ops memory_update \
    --out "$O/bench_$v.json"
done
P2="env PYTHONPATH=/tmp/p/all:/tmp/site"
run check_all 30 $P2 python3 bench/check_cuda.py --ops memory_update
run tests_all 60 $P2 python3 -m pytest tests/ops/test_memory_update.py -q -p no:cacheprovider -rs -k "cuda and not triton"
run memcheck_all 50 $P2 $SAN --tool memcheck python3 bench/check_cuda.py --small --ops memory_update
run racecheck_all 70 $P2 $SAN --tool racecheck python3 bench/check_cuda.py --small --ops memory_update
W=main; grep -q " passed" "$O/tests_all.log" && ! grep -q "failed" "$O/tests_all.log" && W=all
echo "throughput on $W" | tee -a "$O/summary.log"
run throughput_16384 190 env PYTHONPATH=/tmp/p/$W:/tmp/site python3 bench/compare_models.py throughput \
  --device cuda --compile on --compile-mode reduce-overhead --sizes 16384 --tokens-per-step 16384 \
  --micro-tokens 16384 --dtype bf16 --archs mmrec-linear,gpt --budget-s 185 --worker-timeout 90 --steps 5 \
  --out "$O/throughput_cuda_graphs_16384.json"
cat "$O/summary.log"; for v in main pairs2 bwd2 all; do echo "== $v"; grep -A18 "^op " "$O/bench_$v.log"; done
tail -n 2 "$O"/check_*.log "$O"/tests_*.log "$O"/memcheck_*.log "$O"/racecheck_*.log; grep -h "tok/s" "$O"/throughput_*.log | sort -u
