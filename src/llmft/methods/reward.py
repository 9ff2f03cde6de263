"""Reward model on the `pair` view: a scalar score head read at the last non-pad token, trained with
the Bradley-Terry loss (optionally with a margin) so chosen completions score above rejected ones.
The head is saved beside the adapter or model (`score_head.safetensors`) for a later PPO run."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from llmft.methods.base import Metrics, ObjectiveModule
from llmft.methods.preference import count_pairs
from llmft.models.forward import pair_scores
from llmft.models.handle import ModelHandle


class RewardModel(ObjectiveModule):
    view = "pair"
    head = "score"

    def __init__(self, handle: ModelHandle, optimizer, loss: Callable[..., torch.Tensor], scheduler=None,
                 gradient_clip_val: float | None = 1.0, disable_dropout: bool = True, margin: float | None = None):
        super().__init__(handle, optimizer, scheduler, gradient_clip_val, disable_dropout)
        if handle.head is None:
            raise ValueError("method=reward needs a model built with its score head (models.build(..., head='score'))")
        self.loss = loss
        self.margin = margin

    def normaliser(self, micro: dict) -> int:
        return count_pairs(micro)

    def loss_sum(self, micro: dict, ctx: Any = None) -> tuple[torch.Tensor, int, Metrics]:
        chosen, rejected = pair_scores(self.model, self.scalar_head, micro).float().chunk(2)
        losses = self.loss(chosen, rejected, margin=self.margin)
        n = chosen.shape[0]
        margins = (chosen - rejected).detach()
        return losses.sum(), n, {
            "accuracy": ((margins > 0).sum(), n),
            "rewards/chosen": (chosen.detach().sum(), n),
            "rewards/rejected": (rejected.detach().sum(), n),
            "rewards/margins": (margins.sum(), n),
        }
