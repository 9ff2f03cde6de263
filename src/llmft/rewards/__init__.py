"""Rewards for online methods (PPO, GRPO, RLOO): a callable that scores decoded responses.

    reward(completions: list[str], meta: list[dict]) -> list[float]      one score per response

`meta` is the prompt row's metadata (id, task, answer, prompt messages, tools). Built from
`conf/reward/*.yaml` by the orchestration and handed to the method:

- `TaskVerifier` (reward=verifier, the default): 1.0 when the bundled suite's verifier accepts the
  response for the row's task and answer, else 0.0 (rule-based, exact).
- `RewardModelScore` (reward=model reward.run_dir=<a method=reward run>): the trained score head.
- `FunctionReward` (reward=function reward.fn=<module.function>): any user function with the
  signature above.

`check_rows(rows, where)` runs before the model loads: a reward that needs something the rows lack
fails there, naming the row and what to configure instead.
"""
from llmft.rewards.function import FunctionReward
from llmft.rewards.reward_model import RewardModelScore
from llmft.rewards.verifier import TaskVerifier

__all__ = ["TaskVerifier", "RewardModelScore", "FunctionReward"]
