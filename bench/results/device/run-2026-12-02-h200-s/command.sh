#!/usr/bin/env bash
# The one device command of H200 run s (2026-12-02), from the repository root: OUT=/dir bash <this file>, with the
# wheels of pydantic 2.14.4, pydantic-core 2.50.5, typing-inspection 0.4.5, annotated-types 0.8.0 and
# typing_extensions 4.16.0 in .whl/ (the trainer's config needs pydantic; the image has none).
# The kernels of run r (whose files did not come back: its archive, with the quality runs' folders, passed the
# 16 MiB limit): accuracy and kernel times of memory_read; the quality runs (small preset, seeds 1 and 2, GPT and
# both MM-Rec variants) beside the read's op suite on triton-cuda (a correctness run: sharing the GPU is harmless);
# then, alone on the GPU, the compiled training step (base, bf16, 16,384 tokens per step, T=1,024).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
O=/tmp/o; rm -rf "$O" /tmp/runs; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=560
source bench/device_deadline.sh
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run readcheck 70 python3 bench/check_memory_read.py --profile
run quality 250 python3 bench/compare_models.py quality --device cuda --archs gpt,mmrec,mmrec-linear \
  --seeds 1,2 --jobs 6 --run-timeout 200 --budget-s 240 --runs-dir /tmp/runs --out "$O/quality_cuda.json" &
run readtests 250 python3 -m pytest tests/ops/test_memory_read.py tests/ops/test_triton.py -q -p no:cacheprovider \
  -rs --durations=5 -k "triton-cuda or (triton and memory_read)"
wait
run throughput 200 python3 bench/compare_models.py throughput --device cuda --compile on --sizes 1024 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --archs gpt,mmrec-linear,mmrec --budget-s 190 \
  --worker-timeout 100 --out "$O/throughput_cuda_compiled_1024.json"
tar czf "$OUT/s.tgz" -C "$O" .
ls -la "$OUT"; cat "$O/summary.log"; tail -n 30 "$O/readcheck.log"; grep "tok/s" "$O/throughput.log"
tail -n 4 "$O/readtests.log"; tail -n 16 "$O/quality.log"
