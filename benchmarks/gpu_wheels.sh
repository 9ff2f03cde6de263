#!/usr/bin/env bash
# Wheels for benchmarks/gpu_suite.sh, saved to .whl/ (git-ignored; the device tool carries it): what the
# GPU machine lacks (hydra, omegaconf, antlr4, bitsandbytes, datasets, dill, multiprocess, trl) and the
# transformers and peft this project is tested with, and SmolLM2's tokenizer. bitsandbytes keeps only its CUDA 13 and CPU
# libraries (the machine's torch is a CUDA 13 build): the whole wheel is 43 MB, over the carry limit
# beside the others. Versions are those of this machine's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
version() { "$py" -c "from importlib.metadata import version; print(version('$1'))"; }
rm -rf .whl && mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
names=()
for package in hydra-core omegaconf bitsandbytes datasets dill multiprocess trl transformers peft; do
  names+=("$package==$(version "$package")")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${names[@]}"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 pins) is published as source only: build its wheel.
"$py" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
bnb=$(ls .whl/bitsandbytes-*.whl)
work=$(mktemp -d)
(cd "$work" && unzip -q "$OLDPWD/$bnb" && find bitsandbytes -name 'libbitsandbytes_*.so' \
   ! -name '*_cpu.so' ! -name '*_cuda13*.so' -delete && rm "$OLDPWD/$bnb" && zip -q -r "$OLDPWD/$bnb" .)
rm -rf "$work"
# SmolLM2's tokenizer (its chat template) for the random-weight models: the embedded model comes from a
# PyPI package (a GGUF file) the GPU machine does not have.
PYTHONPATH=src "$py" -c "
from transformers import AutoTokenizer
from llmft.models import embedded
AutoTokenizer.from_pretrained(embedded.resolve('llmft:smollm2-135m-instruct')).save_pretrained('.whl/tokenizer')"
ls -la .whl .whl/tokenizer
du -cb .whl | tail -1 | awk '{printf "wheels: %.1f MiB (the carry limit, working tree included: 64 MiB)\n", $1 / 2^20}'
