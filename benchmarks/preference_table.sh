#!/usr/bin/env bash
# The README's preference table: base, SFT, SFT->DPO (and SFT->SFT with the same 32 extra steps),
# SFT->IPO, SFT->KTO, SimPO, ORPO and the reward model, each with its default settings, one after
# another (time them with nothing else running), then the paired comparisons with 95% intervals.
#
#   bash benchmarks/preference_table.sh [OUT]      # OUT defaults to runs/preference_table
#
# About 1 h 45 min on a 2-core CPU; every run is a plain `python train.py ...` you can also run alone.
set -euo pipefail
out=${1:-runs/preference_table}
mkdir -p "$out"
py=${PYTHON:-python}
run() {  # run NAME OVERRIDES...: one training run into $out/NAME, its wall time appended to $out/times.txt
  local name=$1; shift
  local start=$SECONDS
  "$py" train.py "$@" hydra.run.dir="$out/$name" > "$out/$name.log" 2>&1
  echo "$name $((SECONDS - start))s $*" | tee -a "$out/times.txt"
}
run sft     method=sft peft=lora
run sft_dpo method=dpo peft=lora  init_from="$out/sft"
run sft_sft method=sft peft=lora  init_from="$out/sft"   # the control: as many extra steps, on the chosen answers
run sft_kto method=kto peft=lora  init_from="$out/sft"
run sft_ipo method=ipo peft=lora  init_from="$out/sft"
run orpo    method=orpo peft=lora
run simpo   method=simpo peft=lora
run reward  method=reward peft=lora
run dpo     method=dpo peft=qlora                          # the README's first command, from the base model
"$py" -m llmft.compare "$out/sft_sft" "$out/sft_dpo" --json "$out/sft_dpo_vs_sft_sft.json"
"$py" -m llmft.compare "$out/sft:base" "$out/sft" "$out/sft_dpo" "$out/sft_ipo" "$out/sft_kto" "$out/simpo" "$out/orpo" \
    --json "$out/against_base.json"
"$py" -m llmft.compare "$out/sft" "$out/sft_dpo" "$out/sft_ipo" "$out/sft_kto" --json "$out/against_sft.json"
