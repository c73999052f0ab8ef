#!/usr/bin/env bash
# Model-level comparison on one GPU (issue 8): MM-Rec (both recurrences) against a GPT and an LSTM of the same
# size. Assumes the package is installed with its CUDA kernels (MMREC_CUDA=ON pip install ...). Run from anywhere:
#     OUT=/some/dir bash bench/device_models.sh throughput   # training tokens/s + generation, `base` size (~5 min)
#     OUT=/some/dir bash bench/device_models.sh quality      # three-stage runs at `small`, 2 seeds (~4 min)
# Every step is teed to $OUT/<step>.log and $OUT/summary.log lists each step's exit code and seconds. The JSONs
# ($OUT/{throughput,generate,quality}_cuda.json) are rewritten after every finished worker or run, so a step cut
# by its timeout still leaves its finished rows; copy them to bench/results/models/ and run
# `python bench/plot_benchmarks.py`. Budgets: throughput 220 s + generate 200 s; quality 440 s (+ env up to 30 s).
set -u
cd "$(dirname "$0")/.."
MODE=${1:-}
if [ "$MODE" != throughput ] && [ "$MODE" != quality ]; then
  echo "usage: OUT=/dir bash bench/device_models.sh throughput|quality" >&2
  exit 2
fi
OUT=${OUT:-$PWD/device_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
: > "$OUT/summary.log"

source bench/device_step.sh

case "$MODE" in
  throughput)
    step env 30 bash -c "nvidia-smi; $PY -c 'import torch, mmrec_ops; print(torch.__version__, torch.version.cuda, \
torch.backends.cudnn.version(), torch.cuda.get_device_name()); print(mmrec_ops.available_backends())'"
    # base size (~125M parameters, vocabulary 32,000), bf16 autocast, 65,536 tokens per optimizer step in
    # micro-batches of 16,384 tokens (B = 64/16/4 rows of T = 1,024/4,096/16,384)
    step throughput 235 $PY bench/compare_models.py throughput --device cuda --sizes 1024,4096,16384 \
      --tokens-per-step 65536 --micro-tokens 16384 --dtype bf16 --archs mmrec,gpt,mmrec-linear,lstm \
      --budget-s 220 --worker-timeout 120 \
      --out "$OUT/throughput_cuda.json"
    # bf16 weights; prefill in 16,384-token chunks, then 8 + 64 greedy decode steps; batch 1, then batch 8
    step generate 215 $PY bench/compare_models.py generate --device cuda --contexts 1024,4096,16384,65536 \
      --batches 1,8 --new-tokens 64 --prefill-chunk 16384 --budget-s 200 --worker-timeout 90 \
      --out "$OUT/generate_cuda.json"
    ;;
  quality)
    step env 30 bash -c "nvidia-smi; $PY -c 'import torch, mmrec_ops; print(torch.__version__, torch.version.cuda, \
torch.backends.cudnn.version(), torch.cuda.get_device_name()); print(mmrec_ops.available_backends())'"
    # 4 pipelines at once on the one GPU (small models leave it mostly idle); their tokens/s are not benchmarks
    step quality 455 $PY bench/compare_models.py quality --device cuda --seeds 1,2 \
      --archs mmrec,gpt,lstm,mmrec-tbptt --jobs 4 --run-timeout 300 --budget-s 440 \
      --runs-dir "$OUT/runs" --out "$OUT/quality_cuda.json"
    ;;
esac
echo "=== summary"
cat "$OUT/summary.log"
