"""Small tensor helpers shared by the loss modules (torch only)."""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the dtype to compute in: ``dtype`` promoted to at least float32.

    bf16/fp16 inputs are upcast to float32; float32 and float64 are kept.
    """
    return torch.promote_types(dtype, torch.float32)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is non-zero.

    masked_mean(x, m) = sum(x * m) / sum(m). Raises ValueError when ``mask`` selects nothing
    (the mean is undefined; a silent 0 or NaN would hide a data problem).
    """
    mask = mask.to(values.dtype)
    denom = mask.sum()
    if not bool(denom > 0):
        raise ValueError("masked mean over an empty mask: no position has mask == 1")
    return (values * mask).sum() / denom
