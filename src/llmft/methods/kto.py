"""KTO (Ethayarajh et al. 2024) on the `unpaired` view: desirable and undesirable completions,
each judged against a reference point z0 = KL(policy || reference), estimated per window on
mismatched prompt/completion pairs (`data.collate.with_mismatched_pairs`), detached and clamped at 0.
"""
from __future__ import annotations

from typing import Any

import torch

from llmft.methods.base import BetaObjective, Metrics
from llmft.models.forward import sequence_logp_sums


class KTO(BetaObjective):
    view = "unpaired"
    needs_reference = True

    def normaliser(self, micro: dict) -> int:
        return int(micro["input_ids"].shape[0])

    @torch.no_grad()
    def prepare_window(self, window: list[dict]) -> torch.Tensor:
        """z0: the mean over the window's mismatched pairs of log p_policy - log p_reference."""
        policy = torch.cat([sequence_logp_sums(self.model, micro, prefix="kl_")[0] for micro in window])
        with self.reference() as reference:
            ref = torch.cat([sequence_logp_sums(reference, micro, prefix="kl_")[0] for micro in window])
        return (policy - ref).mean().clamp(min=0)

    def loss_sum(self, micro: dict, ctx: Any = None) -> tuple[torch.Tensor, int, Metrics]:
        policy, _ = sequence_logp_sums(self.model, micro)
        with self.reference() as reference:
            ref, _ = sequence_logp_sums(reference, micro)
        desirable = micro["desirable"].bool()
        losses, rewards = self.loss(policy, ref, ctx, desirable, beta=self.beta)
        n, n_good = desirable.numel(), desirable.sum()
        metrics = {
            "rewards/chosen": (rewards[desirable].sum(), n_good),
            "rewards/rejected": (rewards[~desirable].sum(), n - n_good),
            "logps/chosen": (policy.detach()[desirable].sum(), n_good),
            "logps/rejected": (policy.detach()[~desirable].sum(), n - n_good),
            "kl": (ctx * n, n),
        }
        return losses.sum(), n, metrics
