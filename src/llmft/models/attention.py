"""Per-document attention for padding-free packed batches with sdpa (any device, flash-attn not needed).

A packed micro-batch can run as one row of real tokens, every document after the other, with its
`position_ids` restarting at each document: no padding at all (`forward.packed_for`). flash-attn's
varlen kernel confines attention to each document on a GPU. Elsewhere transformers would build a
block-diagonal mask over the whole row and attend over all of it (quadratic in the row, not in each
document: packing measured x0.94 on a CPU). `llmft_sdpa` is sdpa, except that given the documents'
boundaries (`cu_seq_lens_q`, as flash-attn takes them) it runs causal sdpa on each document's slice:
exactly each document's own attention, nothing computed across documents.

Training on a CPU in bf16/fp16 (weights or autocast), `llmft_sdpa` computes attention as half-precision
matmuls and a float32 softmax (`causal_attention`: what transformers' eager attention computes under
autocast), not with PyTorch's CPU flash kernel. Under autocast that kernel ran in float32 (the rotary
embedding leaves q and k in float32), and its backward is slow. Measured on a 2-core AVX512-BF16 machine,
forward plus backward of [8, 9 heads, 200, 64]: flash float32 24.7 ms, flash bf16 40.7 ms, matmuls
bf16 17.6 ms; with the flash kernel, SmolLM2-135M LoRA spent a quarter of its step in attention's backward.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "llmft_sdpa"
BOUNDARY_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
         attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' sdpa; `causal_attention` when training on a CPU in a half dtype (see the module)."""
    half = half_dtype(query)
    if half is None or not (torch.is_grad_enabled() and query.requires_grad and query.shape[2] == key.shape[2]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    dropout = kwargs.get("dropout", 0.0) if module.training else 0.0
    query, key, value = query.to(half), key.to(half), value.to(half)
    return causal_attention(query, key, value, attention_mask, kwargs.get("scaling"), dropout), None


def half_dtype(query: torch.Tensor) -> torch.dtype | None:
    """The half dtype attention computes in on a CPU: the query's, or autocast's (under autocast the
    rotary embedding leaves q and k in float32, and sdpa then ran in float32); None elsewhere."""
    halves = (torch.bfloat16, torch.float16)
    if query.device.type != "cpu":
        return None
    if query.dtype in halves:
        return query.dtype
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in halves:
        return torch.get_autocast_dtype("cpu")
    return None


def causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                     scaling: float | None = None, dropout: float = 0.0) -> torch.Tensor:
    """softmax(q k^T * scaling + mask) v with the softmax in float32: q [B, H, T, D], k and v [B, KV, T, D]
    (grouped heads repeated), `mask` None (causal) or sdpa's mask (bool, True = attend; or additive),
    -> [B, T, H, D]. A query allowed nothing gets a uniform row, not NaN (padding only)."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)).float() * scale
    if mask is None:
        length = query.shape[2]
        mask = torch.ones(length, length, dtype=torch.bool, device=query.device).tril()
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    if dropout > 0:
        probs = torch.nn.functional.dropout(probs, p=dropout, training=True)
    return torch.matmul(probs, value).transpose(1, 2).contiguous()


def sdpa_per_document(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, None]:
    """sdpa; with `cu_seq_lens_q` (one packed row), causal sdpa within each document."""
    bounds = kwargs.get("cu_seq_lens_q")
    kwargs = {k: v for k, v in kwargs.items() if k not in BOUNDARY_KEYS}
    if bounds is None or query.shape[0] != 1:
        return sdpa(module, query, key, value, attention_mask, **kwargs)
    kwargs["is_causal"] = True
    edges = bounds.tolist()
    outputs = [sdpa(module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                                      None, **kwargs)[0]
               for start, end in zip(edges[:-1], edges[1:]) if end > start]
    return torch.cat(outputs, dim=1), None  # [1, tokens, heads, head_dim]


AttentionInterface.register(NAME, sdpa_per_document)
AttentionMaskInterface.register(NAME, sdpa_mask)
