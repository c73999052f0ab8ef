#!/usr/bin/env bash
# The one device command of H200 run r (2026-12-02), from the repository root: OUT=/dir bash <this file>, with the
# wheels of pydantic 2.14.4, pydantic-core 2.50.5, typing-inspection 0.4.5, annotated-types 0.8.0 and
# typing_extensions 4.16.0 in .whl/ (the trainer's config needs pydantic; the image has none).
# The Triton memory_read backward with its own bank backward (chunk maps from the read's backward kernel, a carry
# over them from the end of time, a reverse walk per chunk) in place of mdi's backward: accuracy and kernel times,
# the compiled training step (base, bf16, 16,384 tokens per step, T=1,024 and 4,096, profile of one step), then the
# quality runs with the linear variant beside the nonlinear one and the GPT (small preset, seeds 1 and 2).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=580
source bench/device_deadline.sh
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run readcheck 100 python3 bench/check_memory_read.py --profile --bank-sweep
run throughput 290 python3 bench/compare_models.py throughput --device cuda --compile on --sizes 1024,4096 \
  --tokens-per-step 16384 --micro-tokens 16384 --dtype bf16 --archs gpt,mmrec-linear,mmrec --budget-s 280 \
  --worker-timeout 150 --profile 30 --out "$O/throughput_cuda_compiled_profile.json"
run quality $(( $(left) - 10 )) python3 bench/compare_models.py quality --device cuda --archs gpt,mmrec,mmrec-linear \
  --seeds 1,2 --jobs 6 --run-timeout 200 --budget-s $(( $(left) - 20 )) --runs-dir "$O/runs" \
  --out "$O/quality_cuda.json"
find "$O/runs" -name "*.pt" -delete 2>/dev/null
tar czf "$OUT/r.tgz" -C "$O" .
cat "$O/summary.log"; tail -n 24 "$O/readcheck.log"; grep "tok/s" "$O/throughput.log"; tail -n 22 "$O/quality.log"
