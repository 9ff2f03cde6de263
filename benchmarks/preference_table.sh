#!/usr/bin/env bash
# The README's preference table: base, SFT, SFT->DPO (and SFT->SFT with the same 32 extra steps),
# SFT->IPO, SFT->KTO, SimPO, ORPO and the reward model, each with its default settings, one after
# another (time them with nothing else running), then the paired comparisons with 95% intervals.
#
#   bash benchmarks/preference_table.sh [OUT]      # OUT defaults to runs/preference_table
#
# About 1 h 45 min on a 2-core CPU; every run is a plain `python train.py ...` you can also run alone.
out=${1:-runs/preference_table}
source "$(dirname "$0")/runs.sh"
run sft     method=sft peft=lora
run sft_dpo method=dpo peft=lora  init_from="$out/sft"
run sft_sft method=sft peft=lora  init_from="$out/sft"   # the control: as many extra steps, on the chosen answers
run sft_kto method=kto peft=lora  init_from="$out/sft"
run sft_ipo method=ipo peft=lora  init_from="$out/sft"
run orpo    method=orpo peft=lora
run simpo   method=simpo peft=lora
run reward  method=reward peft=lora init_from="$out/sft" data.limit_train=null   # the selected recipe (README)
run reward_base method=reward peft=lora                                        # the defaults, from the base
run dpo     method=dpo peft=qlora                          # the README's first command, from the base model
"$py" -m llmft.compare "$out/sft_sft" "$out/sft_dpo" --json "$out/sft_dpo_vs_sft_sft.json"
"$py" -m llmft.compare "$out/sft:base" "$out/sft" "$out/sft_dpo" "$out/sft_ipo" "$out/sft_kto" "$out/simpo" "$out/orpo" \
    --json "$out/against_base.json"
"$py" -m llmft.compare "$out/sft" "$out/sft_dpo" "$out/sft_ipo" "$out/sft_kto" --json "$out/against_sft.json"
