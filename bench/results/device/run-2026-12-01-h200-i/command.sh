#!/usr/bin/env bash
# The one device command of H200 run i (2026-12-01), from the repository root: OUT=/dir bash <this file>.
# Decode with the compiled step in its for_compile form (elementwise norms, matvec and read that Inductor fuses):
# the CUDA decode tests, then decode against context and batch (1, 8, 64) for MM-Rec (compiled CUDA-graph step)
# and the Hugging Face GPT-2 with a static cache + torch.compile in the same process.
set -u
O=/tmp/o; rm -rf "$O"; mkdir -p "$O"
export PYTHONUNBUFFERED=1 MMREC_CUDA=ON DEADLINE_S=520
source bench/device_deadline.sh
run build 120 python3 -m pip install --no-build-isolation --no-deps -v \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 .
run decodetests 100 python3 -m pytest tests/model/test_decode.py -q -p no:cacheprovider -rs -k "cuda or compiled"
run decode $(( $(left) - 10 )) python3 bench/bench_decode.py --device cuda --preset base --dtype bfloat16 \
  --models mmrec-nonlinear-compiled,hf-gpt2-static-compile,mmrec-linear-compiled --contexts 1024,16384,65536 \
  --batches 1,8,64 --tokens 256 --max-prefill 1100000 --json "$O/decode_context.json"
tar czf "$OUT/i.tgz" -C "$O" .
cat "$O/summary.log"
