"""Reward-model training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    margin: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Bradley-Terry pairwise reward-model loss (Ouyang et al. 2022, InstructGPT).

    losses = -logsigmoid(chosen_scores - rejected_scores - margin), per pair [B]; margin = 0 when
    None, otherwise a scalar or [B] tensor (the preference-strength margin of Llama 2,
    Touvron et al. 2023).
    """
    diff = chosen_scores - rejected_scores
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)
