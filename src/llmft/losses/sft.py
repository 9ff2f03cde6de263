"""Supervised fine-tuning loss: token-level negative log-likelihood."""

from __future__ import annotations

import torch

from .logps import IGNORE_INDEX, token_logps


def sft_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL over supervised tokens and their number.

    nll_sum = -sum_{b, t : labels[b, t] != -100, t >= 1} log p(labels[b, t] | tokens < t);
    n = that number of supervised tokens (int64 0-dim tensor, no host sync).
    Used to normalise by the supervised tokens of a whole gradient-accumulation window
    (sum the nll_sum and n of every micro-batch, divide once). n may be 0 for one micro-batch.
    """
    nll_sum = -token_logps(logits, labels).sum()
    n_tokens = (labels[:, 1:] != IGNORE_INDEX).sum()
    return nll_sum, n_tokens


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over all supervised tokens of the batch (token-weighted).

    loss = sum_{b, t} -log p(labels[b, t] | tokens < t) / N, over the N supervised positions of
    the whole batch (labels != -100, t >= 1): long sequences weigh more than short ones; this is
    not the mean of per-sequence means. Raises ValueError when N = 0.
    """
    nll_sum, n_tokens = sft_loss_sum(logits, labels)
    if not bool(n_tokens > 0):
        raise ValueError(
            "sft_loss: the batch has no supervised token (every label is -100 after the shift); "
            "check the assistant-only label mask and truncation (data.max_length)"
        )
    return nll_sum / n_tokens.to(nll_sum.dtype)
