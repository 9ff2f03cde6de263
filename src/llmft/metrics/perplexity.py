"""Perplexity of the supervised (assistant) tokens of a split."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from llmft.models.forward import eval_mode, supervised_nll_sum


@torch.no_grad()
def perplexity(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], autocast_dtype=None) -> float:
    """exp(total NLL / total supervised tokens): token-weighted over the whole split."""
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    with eval_mode(model):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                batch_nll, batch_count = supervised_nll_sum(model, batch)
            nll += float(batch_nll)
            count += int(batch_count)
    if count == 0:
        raise ValueError("perplexity: the split has no supervised token")
    return math.exp(nll / count)
