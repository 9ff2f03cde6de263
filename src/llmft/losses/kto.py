"""Kahneman-Tversky Optimization loss on unpaired desirable/undesirable examples."""

from __future__ import annotations

import torch


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    kl: torch.Tensor | float,
    desirable: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO loss (Ethayarajh et al. 2024, arXiv:2402.01306; TRL's KTOTrainer convention).

    r = policy_logps - ref_logps (per-example log-ratio, [B]); z0 = max(kl, 0), the reference
    point (an estimate of KL(policy || reference), e.g. on mismatched prompt/completion pairs),
    detached: no gradient flows through it.
      desirable[b]:   losses[b] = desirable_weight   * (1 - sigmoid(beta * (r[b] - z0)))
      undesirable[b]: losses[b] = undesirable_weight * (1 - sigmoid(beta * (z0 - r[b])))
    rewards = beta * r (detached). ``desirable`` is a bool tensor [B].
    Returns (losses [B], rewards [B]).
    """
    logratio = policy_logps - ref_logps
    z0 = torch.as_tensor(kl, dtype=logratio.dtype, device=logratio.device).detach().clamp(min=0)
    desirable = desirable.to(device=logratio.device, dtype=torch.bool)
    chosen = desirable_weight * (1.0 - torch.sigmoid(beta * (logratio - z0)))
    rejected = undesirable_weight * (1.0 - torch.sigmoid(beta * (z0 - logratio)))
    losses = torch.where(desirable, chosen, rejected)
    return losses, (beta * logratio).detach()
