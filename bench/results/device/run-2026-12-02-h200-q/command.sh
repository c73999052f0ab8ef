#!/usr/bin/env bash
# The one device command of H200 run q (2026-12-02), from the repository root: OUT=/dir bash <this file>.
# Where the compiled training step's time goes (a profile of one step per row: base, bf16, 16,384 tokens per step,
# T=1,024 and 4,096, GPT and both MM-Rec variants), then the quality runs with the linear variant beside the
# nonlinear one and the GPT (small preset, seeds 1 and 2, six pipelines at once).
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=590
source bench/device_deadline.sh
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run throughput 330 python3 bench/compare_models.py throughput --device cuda --compile on --sizes 1024,4096 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --archs gpt,mmrec-linear,mmrec --budget-s 320 \
  --worker-timeout 150 --profile 30 --out "$O/throughput_cuda_compiled_profile.json"
run quality $(( $(left) - 15 )) python3 bench/compare_models.py quality --device cuda --archs gpt,mmrec,mmrec-linear \
  --seeds 1,2 --jobs 6 --run-timeout 200 --budget-s $(( $(left) - 25 )) --runs-dir "$O/runs" \
  --out "$O/quality_cuda.json"
rm -rf "$O/runs"/*/checkpoints "$O/runs"/*/*.pt 2>/dev/null
tar czf "$OUT/q.tgz" -C "$O" .
cat "$O/summary.log"; grep -A34 "tok/s" "$O/throughput.log" | cut -c1-170; tail -n 25 "$O/quality.log"
