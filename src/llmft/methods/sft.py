"""Supervised fine-tuning: NLL of the assistant tokens, normalised per supervised token."""
from __future__ import annotations

from typing import Any

import torch

from llmft.methods.base import Metrics, ObjectiveModule
from llmft.models.forward import supervised_nll_sum


class SFT(ObjectiveModule):
    """Token-level NLL over the assistant turns (log-probs computed only where a label is supervised)."""

    view = "chat"

    def loss_sum(self, micro: dict, ctx: Any = None) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        nll_sum, n_tokens = supervised_nll_sum(self.model, micro)
        return nll_sum, n_tokens, {}
