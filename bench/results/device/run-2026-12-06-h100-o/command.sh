#!/usr/bin/env bash
# The one device command of run o (2026-12-06), from the repository root: OUT=/dir bash <this file>, with main at
# this commit (run n's scan stream24 and memory_update refactor landed), the wheels of run n's header in .whl/ and
# .devsnap/mr_rebuild (kernels/triton/memory_read.py, backends/triton.py, bench/check_memory_read.py of branch
# mr-rebuild: the Triton memory_read backward rebuilding each time chunk's banks from the chunk entries).
# Builds main; times memory_read (check_memory_read --skip-check --profile) on main and on mr_rebuild (with its bank
# sweep); then the compiled training step (reduce-overhead) of MM-Rec linear, the GPT and MM-Rec nonlinear at
# T=1,024, B=16 on main, and MM-Rec linear on mr_rebuild when its fused/triton fwd+bwd beat main's.
# Writes at most 8 files to $OUT (the tool's limit): o.tgz (every log), summary and the timing logs.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
O=/tmp/o; rm -rf "$O" /tmp/v /tmp/w /tmp/p; mkdir -p "$O" /tmp/v
cp -r . /tmp/v/main; rm -rf /tmp/v/main/.devsnap /tmp/v/main/.whl
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=${DEADLINE_S:-560} SNAPSHOT="$OUT/o.tgz"
source bench/device_deadline.sh
build() {
  python3 -m pip wheel --no-build-isolation --no-deps --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 \
    -w /tmp/w/main /tmp/v/main && python3 -m pip install -q --no-deps --target /tmp/p/main /tmp/w/main/*.whl \
    && cp -r /tmp/p/main /tmp/p/mr_rebuild \
    && cp .devsnap/mr_rebuild/memory_read.py /tmp/p/mr_rebuild/mmrec_ops/triton_kernels/ \
    && cp .devsnap/mr_rebuild/triton.py /tmp/p/mr_rebuild/mmrec_ops/backends/ && ls /tmp/p/*/mmrec_ops/_C*.so
}
run build 170 bash -c "$(declare -f build); build"
run readcheck_main 50 env PYTHONPATH=/tmp/p/main:/tmp/site python3 bench/check_memory_read.py --skip-check --profile
run readcheck_mr_rebuild 110 env PYTHONPATH=/tmp/p/mr_rebuild:/tmp/site python3 .devsnap/mr_rebuild/check_memory_read.py \
  --skip-check --profile --bank-sweep
TP="python3 bench/compare_models.py throughput --device cuda --compile on --compile-mode reduce-overhead --sizes 1024 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --steps 5"
run throughput_1024 190 env PYTHONPATH=/tmp/p/main:/tmp/site $TP --archs mmrec-linear,gpt,mmrec --budget-s 185 \
  --worker-timeout 90 --out "$O/throughput_1024.json"
both() { grep "fused/triton" "$1" | awk '{print $3}'; }
M=$(both "$O/readcheck_main.log"); R=$(both "$O/readcheck_mr_rebuild.log")
echo "fused/triton fwd+bwd ms: main ${M:-?} mr_rebuild ${R:-?}" | tee -a "$O/summary.log"
if [ -n "$M" ] && [ -n "$R" ] && awk "BEGIN{exit !($R < $M)}"; then
  run throughput_1024_mr_rebuild 120 env PYTHONPATH=/tmp/p/mr_rebuild:/tmp/site $TP --archs mmrec-linear \
    --budget-s 115 --worker-timeout 90 --out "$O/throughput_1024_mr_rebuild.json"
fi
(cd "$O" && tar czf "$SNAPSHOT" $(ls *.log *.json 2>/dev/null))
cp "$O/summary.log" "$O"/readcheck_*.log "$O"/throughput_*.log "$OUT/" 2>/dev/null
cat "$O/summary.log"; tail -n 30 "$O"/readcheck_*.log; grep -h "tok/s\|TIMEOUT\|rror" "$O"/throughput_*.log | sort -u
