"""Per-token and per-sequence log-probabilities of labels under a causal LM's logits."""

from __future__ import annotations

import torch

from ._utils import compute_dtype

from llmft.constants import IGNORE_INDEX


def _shifted_token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(targets) for already-aligned ``logits`` [B, T, V] and ``labels`` [B, T].

    log p = logits[label] - logsumexp(logits), in float32 or wider. Never materialises a full
    log_softmax copy: float32/float64 logits are reduced in one logsumexp; lower-precision
    logits are upcast one batch row at a time so the float32 copy is [T, V], not [B, T, V].
    """
    dtype = compute_dtype(logits.dtype)
    index = labels.clamp(min=0).unsqueeze(-1)
    picked = logits.gather(-1, index).squeeze(-1).to(dtype)
    if logits.dtype == dtype:
        lse = torch.logsumexp(logits, dim=-1)
    else:
        lse = torch.stack([torch.logsumexp(row.to(dtype), dim=-1) for row in logits])
    return picked - lse


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token label log-probabilities, aligned with ``labels``.

    out[b, t] = log softmax(logits[b, t - 1])[labels[b, t]] for t >= 1 and labels[b, t] != -100;
    out[b, t] = 0 at t = 0 and where labels[b, t] == -100. ``labels`` are aligned with the input
    ids as in transformers (the shift happens here). logits [B, T, V], labels [B, T] -> [B, T];
    the result is float32 (or float64 for float64 logits) whatever the logits dtype.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"token_logps expects logits [B, T, V] and labels [B, T]; got logits "
            f"{tuple(logits.shape)} and labels {tuple(labels.shape)}"
        )
    first = torch.zeros(
        (labels.shape[0], 1), dtype=compute_dtype(logits.dtype), device=logits.device
    )
    if labels.shape[1] < 2:
        return first
    targets = labels[:, 1:]
    shifted = _shifted_token_logps(logits[:, :-1], targets)
    shifted = shifted.masked_fill(targets == IGNORE_INDEX, 0.0)
    return torch.cat([first, shifted], dim=1)


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, average: bool = False
) -> torch.Tensor:
    """Per-sequence log-probability of the supervised tokens.

    average=False: out[b] = sum_t token_logps[b, t] (log p(y | x), as in DPO, Rafailov et al. 2023).
    average=True: out[b] = sum_t token_logps[b, t] / #{t : labels[b, t] != -100, t >= 1}, the
    length-normalised log-probability used by SimPO (Meng et al. 2024) and ORPO (Hong et al. 2024).
    A sequence with no supervised token has sum 0; averaging it raises ValueError.
    """
    per_token = token_logps(logits, labels)
    total = per_token.sum(dim=-1)
    if not average:
        return total
    counts = (labels[:, 1:] != IGNORE_INDEX).sum(dim=-1)
    if not bool((counts > 0).all()):
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(
            f"sequence_logps(average=True): sequences {empty} have no supervised token "
            "(all labels are -100 after the shift), so their mean log-prob is undefined"
        )
    return total / counts.to(total.dtype)
