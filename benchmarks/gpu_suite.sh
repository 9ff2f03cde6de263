#!/usr/bin/env bash
# benchmarks/gpu_suite.py on the GPU machine, which has torch, lightning and triton but no network and
# none of hydra, omegaconf, bitsandbytes, datasets or trl: they come as wheels in .whl/, made here by
# benchmarks/gpu_wheels.sh and carried along. With the device tool, in one call:
#     run(command="bash benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=420)
# Arguments go to gpu_suite.py (--budget, --sections, ...). Results land in $OUT (the device tool
# brings that folder back), else in ./gpu_suite_out.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_suite_out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/llmft_site .whl/*.whl
export PYTHONPATH=/tmp/llmft_site:$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -c "import hydra, omegaconf, datasets, trl, bitsandbytes, peft, transformers, lightning, llmft.train" \
  || { echo "the carried packages do not import here: see above" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
python3 benchmarks/gpu_suite.py --out "$out" "$@" 2>&1 | tee "$out/log.txt"
