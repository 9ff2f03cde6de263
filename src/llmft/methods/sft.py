"""Supervised fine-tuning: NLL of the assistant tokens, normalised per supervised token."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from llmft.losses import sft_loss_sum
from llmft.methods.base import ObjectiveModule


def supervised_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions t whose logits predict a supervised token (labels[:, t + 1] != -100) in any row."""
    return torch.nonzero((labels[:, 1:] != -100).any(dim=0)).flatten()


class SFT(ObjectiveModule):
    """Token-level NLL over the assistant turns.

    Only the logits that predict a supervised token are computed (`logits_to_keep`): the vocabulary
    projection is a fifth of a small model's compute, and in chat SFT most positions are prompt.
    The loss is the same as over full logits (a test checks it).
    """

    view = "chat"

    def loss_sum(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        labels = batch["labels"]
        keep = supervised_positions(labels)
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            logits_to_keep=keep).logits
        # Re-align for sft_loss_sum, which shifts internally: logits[:, j] predicts kept_labels[:, j].
        kept_labels = F.pad(labels[:, keep + 1], (1, 0), value=-100)
        nll_sum, n_tokens = sft_loss_sum(F.pad(logits, (0, 0, 0, 1)), kept_labels)
        return nll_sum, n_tokens, {}
