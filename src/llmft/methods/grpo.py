"""Group-relative policy gradients on the `prompt` view: `group_size` responses per prompt, each
response's advantage its reward against its group's, no value head, the KL to the reference a term of
the loss (per token, `kl_estimator`, default k3 as in DeepSeekMath and TRL).

- `GRPO` (Shao et al. 2024): A = (r - mean_group) / std_group (`scale_rewards: false`: r - mean_group,
  Dr. GRPO).
- `RLOO` (Ahmadian et al. 2024): A = r - mean of the group's other responses (leave-one-out). The
  paper (and TRL's original RLOOTrainer) subtracts beta x the response's summed KL from its reward
  before the baseline; here, as in GRPO, the KL is a per-token loss term instead, so the two methods
  differ only in their baseline.

Both clip the ratio to the sampling policy as PPO does; with one update per rollout (epochs = 1,
minibatches = 1) the ratio is 1, the old log-probs are the current ones detached, and no extra
forward is spent on them. `loss_aggregation`: `token` (every response token weighs the same) or
`sequence` (every response weighs the same, the GRPO paper): papers disagree, so it is an option.
"""
from __future__ import annotations

import torch

from llmft.losses import aggregate, group_advantages, kl_penalty, ppo_policy_loss, rloo_advantages
from llmft.methods.base import Metrics
from llmft.methods.online import OnlineObjective
from llmft.methods.rollout import Rollout


class GroupRelative(OnlineObjective):
    """Shared by GRPO and RLOO: a sequence-level advantage spread over the response's tokens."""

    def __init__(self, *args, group_size: int = 4, kl_coef: float = 0.04, skip_uniform_groups: bool = True, **kwargs):
        super().__init__(*args, group_size=group_size, kl_coef=kl_coef, **kwargs)
        self.skip_uniform_groups = skip_uniform_groups

    @classmethod
    def check_config(cls, **options) -> None:
        super().check_config(**options)
        group_size = cls.options(**options)["group_size"]
        if group_size < 2:
            raise ValueError(f"method.group_size={group_size}: {cls.__name__} compares each response with the other "
                             "responses to its prompt, so it needs at least 2 per prompt")

    def sequence_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute_advantages(self, rollout: Rollout) -> dict[str, float]:
        advantages = self.sequence_advantages(rollout.rewards)
        rollout.advantages = advantages[:, None] * rollout.response_mask.to(advantages.dtype)
        grouped = rollout.rewards.view(-1, self.group_size)
        return {"frac_reward_zero_std": (grouped.std(dim=1) == 0).float().mean().item()}

    def learning_rows(self, rollout: Rollout) -> Rollout:
        """Without the groups whose responses all got the same reward (`skip_uniform_groups`): their
        advantages are 0, so their only gradient is the KL term's, and their forward and backward cost as
        much as an informative group's (DAPO's dynamic-sampling filter, without drawing replacements)."""
        if not self.skip_uniform_groups:
            return rollout
        grouped = rollout.rewards.view(-1, self.group_size)
        varied = (grouped != grouped[:, :1]).any(dim=1).repeat_interleave(self.group_size)
        return rollout.select(varied.nonzero().flatten().cpu())

    def update_loss(self, part: Rollout) -> tuple[torch.Tensor, Metrics]:
        mask = part.response_mask.float()
        logps, _, entropy = self.policy_forward(part.sequences, part.attention_mask, part.prompt_width,
                                                with_entropy=True)
        old = part.old_logps if part.old_logps is not None else logps.detach()
        per_token, clipped = ppo_policy_loss(logps, old, part.advantages, mask, self.clip_eps, reduction="none")
        if self.kl_coef > 0:
            per_token = per_token + self.kl_coef * kl_penalty(logps, part.ref_logps, self.kl_estimator) * mask
        loss, _ = aggregate(per_token, mask, self.loss_aggregation)
        return loss, {**self.policy_terms(part, logps, entropy), "clip_ratio": (clipped.sum(), mask.sum())}


class GRPO(GroupRelative):
    def __init__(self, *args, scale_rewards: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale_rewards = scale_rewards

    def sequence_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        return group_advantages(rewards, self.group_size, scale=self.scale_rewards)


class RLOO(GroupRelative):
    def sequence_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        return rloo_advantages(rewards, self.group_size)
