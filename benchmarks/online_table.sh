#!/usr/bin/env bash
# The README's online-RL table: from one SFT run of the default recipe, PPO, GRPO and RLOO with their
# default settings, one after another (time them with nothing else running), then each one's test exact
# match against its SFT start as paired differences with 95% intervals; and PPO scored by a reward model.
#
#   bash benchmarks/online_table.sh [OUT] [SFT_RUN] [REWARD_RUN]   # OUT defaults to runs/online_table;
#                                                                  # without SFT_RUN / REWARD_RUN they are trained first
# About 1 h 20 min on a 2-core CPU (plus 7 min for the SFT run and 25 for the reward model if trained here).
out=${1:-runs/online_table}
source "$(dirname "$0")/runs.sh"
sft=${2:-}
if [ -z "$sft" ]; then run sft method=sft peft=lora; sft="$out/sft"; fi
reward=${3:-}
if [ -z "$reward" ]; then run reward method=reward peft=lora init_from="$sft" data.limit_train=null; reward="$out/reward"; fi
run sft_grpo method=grpo init_from="$sft"
run sft_rloo method=rloo init_from="$sft"
run sft_ppo  method=ppo  init_from="$sft"
run sft_ppo_rm method=ppo init_from="$sft" reward=model reward.run_dir="$reward" trainer.max_steps=4
for m in grpo rloo ppo; do
  "$py" -m llmft.compare "$out/sft_$m:base" "$out/sft_$m" --json "$out/sft_${m}_vs_sft.json"
done
