#!/usr/bin/env bash
# Model-level comparison on one GPU (issue 8): MM-Rec (both recurrences) against a GPT and an LSTM of the same
# size. Assumes the package is installed with its CUDA kernels (MMREC_CUDA=ON pip install ...). Run from anywhere:
#     OUT=/some/dir bash bench/device_models.sh throughput   # training tokens/s, `base` size, compiled + eager (~9 min)
#     OUT=/some/dir bash bench/device_models.sh sweep        # nonlinear variant, 64K-256K tokens per step (~5 min)
#     OUT=/some/dir bash bench/device_models.sh generate     # prefill + decode against context (~4 min)
#     OUT=/some/dir bash bench/device_models.sh quality      # three-stage runs at `small`, 2 seeds (~4 min)
# Every step is teed to $OUT/<step>.log and $OUT/summary.log lists each step's exit code and seconds. The JSONs
# ($OUT/{throughput,generate,quality}_cuda.json) are rewritten after every finished worker or run, so a step cut
# by its timeout still leaves its finished rows; copy them to bench/results/models/ and run
# `python bench/plot_benchmarks.py`. Budgets (seconds): throughput TP_TIMEOUT (400) + EAGER_TIMEOUT (150), sizes
# SIZES / EAGER_SIZES, archs ARCHS; sweep 3 x 150; generate 215; quality 455 (+ env up to 30 s each).
set -u
cd "$(dirname "$0")/.."
MODE=${1:-}
if [[ ! "$MODE" =~ ^(throughput|sweep|generate|quality)$ ]]; then
  echo "usage: OUT=/dir bash bench/device_models.sh throughput|sweep|generate|quality" >&2
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
    # base size (~125M parameters, vocabulary 32,000), bf16 autocast, 16,384 tokens per optimizer step (B = 16/4/1
    # rows of T = 1,024/4,096/16,384), compiled as the trainer does on CUDA (--compile auto), then eager
    step throughput ${TP_TIMEOUT:-400} $PY bench/compare_models.py throughput --device cuda --sizes ${SIZES:-1024,4096,16384} \
      --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --archs ${ARCHS:-mmrec-linear,gpt,mmrec} \
      --budget-s $(( ${TP_TIMEOUT:-400} - 10 )) --worker-timeout 200 --out "$OUT/throughput_cuda.json"
    step eager ${EAGER_TIMEOUT:-150} $PY bench/compare_models.py throughput --device cuda --compile off \
      --sizes ${EAGER_SIZES:-${SIZES:-1024,4096,16384}} --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 \
      --archs ${ARCHS:-mmrec-linear,gpt,mmrec} --budget-s $(( ${EAGER_TIMEOUT:-150} - 10 )) --worker-timeout 80 \
      --out "$OUT/throughput_cuda_eager.json"
    ;;
  sweep)
    # the nonlinear variant, compiled, T = 1,024, one micro-batch of 64K / 128K / 256K tokens per step: where it fills
    # the GPU (an out-of-memory row is a result)
    for n in ${SWEEP_TOKENS:-65536 131072 262144}; do
      step "sweep$n" 150 $PY bench/compare_models.py throughput --device cuda --sizes 1024 --tokens-per-step "$n" \
        --micro-tokens "$n" --dtype bf16 --archs mmrec --steps 3 --budget-s 140 --worker-timeout 140 \
        --out "$OUT/sweep_$n.json"
    done
    ;;
  generate)
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
