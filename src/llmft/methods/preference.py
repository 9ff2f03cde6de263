"""Pairwise preference objectives on the `pair` view (chosen vs rejected completion of one prompt).

- `DPO`: against a frozen reference, with the loss from config (`conf/method/dpo|ipo|hinge.yaml`:
  `llmft.losses.dpo_loss`, `ipo_loss`, `hinge_loss`), never a loss-type string.
- `SimPO`: reference-free, on length-averaged log-probs (`simpo_loss`).
- `ORPO`: reference-free, NLL of the chosen completion plus the odds-ratio term (`orpo_loss`).

Chosen and rejected go through one concatenated forward pass. The normaliser is the number of
pairs; metrics follow TRL's names (`rewards/chosen`, `rewards/margins`, `logps/chosen`, ...).
"""
from __future__ import annotations

from typing import Any

import torch

from llmft.methods.base import BetaObjective, Metrics
from llmft.models.forward import is_packed, pair_logp_sums


class PairwiseObjective(BetaObjective):
    """Shared by the pairwise methods: the `pair` view, one unit per pair, dropout off by default."""

    view = "pair"

    def normaliser(self, micro: dict) -> int:
        return count_pairs(micro)

    def policy_logps(self, micro: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(chosen sums, rejected sums, chosen token counts, rejected token counts) under the policy."""
        sums, counts = pair_logp_sums(self.model, micro)
        return (*sums.chunk(2), *counts.chunk(2))


class DPO(PairwiseObjective):
    """Direct Preference Optimization and its variants over a frozen reference.

    `precompute_ref`: the reference log-probs are computed once before training (and cached on disk
    by the orchestration, `llmft.reference_cache`); examples then carry them as `ref_chosen_logps`
    and `ref_rejected_logps`, and training does no reference forward pass.
    """

    needs_reference = True
    REFERENCE_FIELDS = ("ref_chosen_logps", "ref_rejected_logps")

    def __init__(self, *args, average_logps: bool = False, precompute_ref: bool = False, ref_cache: str | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.average_logps = average_logps  # IPO: length-averaged log-probs for policy and reference alike
        self.precompute_ref = precompute_ref
        self.ref_cache = ref_cache

    @torch.no_grad()
    def reference_values(self, micro: dict) -> dict[str, torch.Tensor]:
        """The reference's per-pair log-probs of a micro-batch: what `precompute_ref` caches."""
        with self.reference() as reference:
            sums, counts = pair_logp_sums(reference, micro)
        values = sums / counts if self.average_logps else sums
        return dict(zip(self.REFERENCE_FIELDS, values.chunk(2)))

    def loss_sum(self, micro: dict, ctx: Any = None) -> tuple[torch.Tensor, int, Metrics]:
        pc, pr, nc, nr = self.policy_logps(micro)
        if self.average_logps:
            pc, pr = pc / nc, pr / nr
        cached = micro if self.REFERENCE_FIELDS[0] in micro else self.reference_values(micro)
        rc, rr = (cached[k].to(pc) for k in self.REFERENCE_FIELDS)
        losses, chosen_rewards, rejected_rewards = self.loss(pc, pr, rc, rr, beta=self.beta)
        n = pc.shape[0]
        return losses.sum(), n, pair_metrics(pc, pr, chosen_rewards, rejected_rewards, nc, nr)


class SimPO(PairwiseObjective):
    """SimPO (Meng et al. 2024): reference-free, length-averaged log-probs, a target margin."""

    def loss_sum(self, micro: dict, ctx: Any = None) -> tuple[torch.Tensor, int, Metrics]:
        pc, pr, nc, nr = self.policy_logps(micro)
        pc, pr = pc / nc, pr / nr
        losses, chosen_rewards, rejected_rewards = self.loss(pc, pr, beta=self.beta)
        return losses.sum(), pc.shape[0], pair_metrics(pc, pr, chosen_rewards, rejected_rewards, nc, nr)


class ORPO(PairwiseObjective):
    """ORPO (Hong et al. 2024): per pair, the chosen completion's mean NLL plus the odds-ratio term
    (no reference). TRL averages the NLL over the batch's tokens; per pair keeps the window exact."""

    def loss_sum(self, micro: dict, ctx: Any = None) -> tuple[torch.Tensor, int, Metrics]:
        pc, pr, nc, nr = self.policy_logps(micro)
        pc, pr = pc / nc, pr / nr
        odds_losses, chosen_rewards, rejected_rewards, log_odds = self.loss(pc, pr, beta=self.beta)
        nll = -pc
        n = pc.shape[0]
        metrics = pair_metrics(pc, pr, chosen_rewards, rejected_rewards, nc, nr)
        metrics["nll_loss"] = (nll.detach().sum(), n)
        metrics["log_odds_ratio"] = (torch.nn.functional.logsigmoid(log_odds).sum(), n)  # TRL's names
        metrics["log_odds_chosen"] = (log_odds.sum(), n)
        return (nll + odds_losses).sum(), n, metrics


def count_pairs(micro: dict) -> int:
    """The normaliser of every pairwise objective: one unit per pair (a packed micro-batch, whose rows
    hold several pairs, has one `meta` per pair)."""
    if is_packed(micro):
        return len(micro["meta"])
    return int(micro["chosen_input_ids"].shape[0])


def pair_metrics(pc: torch.Tensor, pr: torch.Tensor, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                 chosen_tokens: torch.Tensor, rejected_tokens: torch.Tensor) -> Metrics:
    """TRL's DPO metrics as (sum, count) over the pairs of a micro-batch."""
    n = pc.shape[0]
    margins = chosen_rewards - rejected_rewards
    return {
        "rewards/chosen": (chosen_rewards.sum(), n),
        "rewards/rejected": (rejected_rewards.sum(), n),
        "rewards/margins": (margins.sum(), n),
        "rewards/accuracies": ((margins > 0).sum(), n),
        "logps/chosen": (pc.detach().sum(), n),
        "logps/rejected": (pr.detach().sum(), n),
        "lengths/chosen": (chosen_tokens.sum(), n),
        "lengths/rejected": (rejected_tokens.sum(), n),
    }
