#!/usr/bin/env bash
# The one device command of H200 run i (2026-12-04), from the repository root: OUT=/dir bash <this file>, with the
# wheels of pydantic 2.14.4, pydantic-core 2.50.5 (cp312), typing-inspection 0.4.5, annotated-types 0.8.0 and
# typing_extensions 4.16.0 in .whl/. The scan's streaming kernel for 16-bit types (bf16x2 lanes): the scan's op
# suite on cuda, the CUDA self-check and compute-sanitizer (memcheck, racecheck) on its small shapes, bench_cuda
# (each pass called from Python and replayed from a CUDA graph, float32 and bf16); the cluster-exchange harness of
# issue 16; the compiled training step (CUDA graphs) at T=16,384 for the three archs; the trainer with gradient
# accumulation under CUDA graphs again (run h fell back to eager: memory_read refused the SymInt k0 of a traced
# position).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=560 SNAPSHOT="$OUT/i.tgz" MMREC_HYPOTHESIS_EXAMPLES=10
SAN="compute-sanitizer --error-exitcode 9 --print-limit 20 --target-processes all"
command -v compute-sanitizer >/dev/null 2>&1 || SAN="/usr/local/cuda/bin/$SAN"
source bench/device_deadline.sh
run build 80 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run scantests 60 python3 -m pytest tests/ops/test_scan.py -q -p no:cacheprovider -rs -k "cuda and not triton"
run check 60 python3 bench/check_cuda.py --ops scan
run memcheck 50 $SAN --tool memcheck python3 bench/check_cuda.py --small --ops scan
run racecheck 60 $SAN --tool racecheck python3 bench/check_cuda.py --small --ops scan
run bench_cuda 120 python3 bench/bench_cuda.py --no-ref --out "$O/bench_cuda.json"
run cluster 40 bash -c "nvcc -O3 -std=c++17 -arch=sm_90 bench/cluster_step_harness.cu -o /tmp/csh && /tmp/csh"
run throughput_16384 180 python3 bench/compare_models.py throughput --device cuda --compile on \
  --compile-mode reduce-overhead --sizes 16384 --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 \
  --archs mmrec-linear,gpt,mmrec --budget-s 175 --worker-timeout 80 --steps 5 \
  --out "$O/throughput_cuda_graphs_16384.json"
run trainer 80 python3 -m mmrec_model.train --stage pretrain --preset small --device cuda --max-steps 40 \
  --compile on --compile-mode reduce-overhead --set stages.pretrain.micro_batch_size=8 --seed 1 \
  --out /tmp/trainer_i --no-progress
find /tmp/trainer_i -name metrics.jsonl -exec cp {} "$O/trainer_metrics.jsonl" \;
(cd "$O" && tar czf "$SNAPSHOT" $(ls *.log *.json *.jsonl 2>/dev/null))
cat "$O/summary.log"; grep -h "tok/s" "$O"/throughput_*.log | sort -u
tail -n 2 "$O/scantests.log" "$O/check.log"; grep -A40 "^op " "$O/bench_cuda.log"; cat "$O/cluster.log"
grep -h -i "warning\|eager" "$O/trainer.log" | head -5; tail -n 4 "$O/trainer.log"
