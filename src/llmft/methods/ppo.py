"""PPO with a value head (Schulman et al. 2017; the RLHF recipe of Ziegler et al. 2019 and TRL).

Per-token reward: -kl_coef * KL_t(policy || reference) on every response token (`kl_estimator`,
k1 by default as in TRL's PPO), plus the sequence reward on the last response token. Advantages by
GAE over the value head's estimates (`gamma`, `lam`), whitened over the rollout; the clipped policy
loss plus `vf_coef` times the clipped value loss (`llmft.losses`). `kl_target` turns on the adaptive
KL controller (Ziegler et al.): kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * rollout_size / horizon.

The value head (`models.heads.ScalarHead`, on the policy's last hidden states) starts untrained;
it is trained with the policy and saved beside it (`value_head.safetensors`). With `value_model: true`
the values come from a separate value model instead (InstructGPT's and TRL's layout): a second model
built by the factory from the same starting point with its own adapter (or weights) and value head,
so the value loss no longer shares a trunk with the policy; it costs a second model in memory and a
second forward per micro-batch, and is saved in `checkpoints/value_model/`. The value statistics are
logged under `value/` (`value/loss`, `value/clipfrac`, `value/explained_variance`).
"""
from __future__ import annotations

import torch

from llmft.losses import aggregate, gae, kl_penalty, masked_whiten, ppo_policy_loss, ppo_value_loss
from llmft.methods.base import Metrics
from llmft.methods.online import OnlineObjective, explained_variance
from llmft.methods.rollout import Rollout
from llmft.models.forward import response_forward, response_values
from llmft.models.handle import ModelHandle


class PPO(OnlineObjective):
    head = "value"
    uses_old_logps = True  # the values come from the same forward

    def __init__(self, *args, epochs: int = 2, minibatches: int = 2, kl_estimator: str = "k1", gamma: float = 1.0,
                 lam: float = 0.95, vf_coef: float = 0.1, value_clip: float = 0.2, whiten_rewards: bool = False,
                 whiten_advantages: bool = True, kl_target: float | None = None, kl_horizon: int = 10000,
                 value_model: bool = False, value_handle: ModelHandle | None = None, **kwargs):
        super().__init__(*args, epochs=epochs, minibatches=minibatches, kl_estimator=kl_estimator, **kwargs)
        self.critic = self.critic_head = None
        if value_model:
            if value_handle is None or value_handle.head is None:
                raise ValueError("method.value_model=true needs the value model built by the factory "
                                 "(models.build(..., head='value'), passed as value_handle; train.py does this)")
            self.value_handle = value_handle
            self.critic, self.critic_head = value_handle.model, value_handle.head  # submodules: moved, optimised
            if self.disable_dropout:
                value_handle.disable_dropout()
        elif getattr(self, "scalar_head", None) is None:
            raise ValueError("method=ppo needs a model built with its value head (models.build(..., head='value'))")
        self.gamma, self.lam, self.vf_coef, self.value_clip = gamma, lam, vf_coef, value_clip
        self.whiten_rewards, self.whiten_advantages = whiten_rewards, whiten_advantages
        self.kl_target, self.kl_horizon = kl_target, kl_horizon

    @classmethod
    def check_config(cls, **options) -> None:
        super().check_config(**options)
        o = cls.options(**options)
        if not 0 <= o["lam"] <= 1 or not 0 < o["gamma"] <= 1:
            raise ValueError(f"method.gamma={o['gamma']}, method.lam={o['lam']}: need 0 < gamma <= 1, 0 <= lam <= 1")
        if o["kl_target"] is not None and o["kl_target"] <= 0:
            raise ValueError(f"method.kl_target={o['kl_target']}: must be positive (or null: a fixed kl_coef)")

    @classmethod
    def separate_value_model(cls, **options) -> bool:
        return bool(cls.options(**options)["value_model"])

    def policy_forward(self, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                       with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.critic is None:  # the value head on the policy's own hidden states
            return super().policy_forward(sequences, attention_mask, prompt_width, with_entropy)
        logps, _, entropy = response_forward(self.model, sequences, attention_mask, prompt_width,
                                             with_entropy=with_entropy, temperature=self.sampling.temperature)
        self.critic.train(self.model.training)  # scored in eval mode, trained in train mode, as the policy
        values = response_values(self.critic, self.critic_head, sequences, attention_mask, prompt_width)
        return logps, values, entropy

    def compute_advantages(self, rollout: Rollout) -> dict[str, float]:
        mask = rollout.response_mask.float()
        kl = kl_penalty(rollout.old_logps, rollout.ref_logps, self.kl_estimator) * mask
        scores = rollout.rewards
        if self.whiten_rewards and len(rollout) > 1:
            scores = (scores - scores.mean()) / (scores.std() + 1e-8)
        token_rewards = -self.kl_coef * kl
        last = rollout.response_mask.sum(-1) - 1
        token_rewards[torch.arange(len(rollout), device=mask.device), last] += scores
        advantages, returns = gae(token_rewards, rollout.values, mask, self.gamma, self.lam)
        rollout.returns = returns
        rollout.advantages = masked_whiten(advantages, mask) if self.whiten_advantages else advantages
        sequence_kl = kl.sum(-1).mean().item()
        metrics = {"kl_coef": self.kl_coef, "objective/kl": sequence_kl,
                   "value/explained_variance": explained_variance(rollout.values, returns, mask),
                   "value/mean": (rollout.values * mask).sum().item() / mask.sum().item()}
        if self.kl_target is not None:  # Ziegler et al.'s proportional controller, for the next rollout
            error = max(min(sequence_kl / self.kl_target - 1, 0.2), -0.2)
            self.kl_coef *= 1 + error * len(rollout) / self.kl_horizon
        return metrics

    def update_loss(self, part: Rollout) -> tuple[torch.Tensor, Metrics]:
        mask = part.response_mask.float()
        logps, values, entropy = self.policy_forward(part.sequences, part.attention_mask, part.prompt_width,
                                                     with_entropy=True)
        policy, clipped = ppo_policy_loss(logps, part.old_logps, part.advantages, mask, self.clip_eps, reduction="none")
        value = ppo_value_loss(values, part.values, part.returns, mask, self.value_clip, reduction="none")
        loss, _ = aggregate(policy + self.vf_coef * value, mask, self.loss_aggregation)
        with torch.no_grad():  # where the clipped value term is the larger one (TRL's vf_clipfrac)
            v_clip = part.values + (values - part.values).clamp(-self.value_clip, self.value_clip)
            value_clipped = ((v_clip - part.returns) ** 2 > (values - part.returns) ** 2).float() * mask
        tokens = mask.sum()
        return loss, {**self.policy_terms(part, logps, entropy), "clip_ratio": (clipped.sum(), tokens),
                      "value/loss": (value.detach().sum(), tokens), "value/clipfrac": (value_clipped.sum(), tokens)}
