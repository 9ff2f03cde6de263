"""Supervised fine-tuning: NLL of the assistant tokens, normalised per supervised token."""
from __future__ import annotations

import torch

from llmft.losses import sft_loss_sum
from llmft.methods.base import ObjectiveModule
from llmft.models.forward import supervised_logits


class SFT(ObjectiveModule):
    """Token-level NLL over the assistant turns (logits computed only where a label is supervised)."""

    view = "chat"

    def loss_sum(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        nll_sum, n_tokens = sft_loss_sum(*supervised_logits(self.model, batch))
        return nll_sum, n_tokens, {}
