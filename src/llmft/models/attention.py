"""Per-document attention for padding-free packed batches with sdpa (any device, flash-attn not needed),
and per-segment attention for preference pairs sharing their prompt (`models.shared_prompt`).

A packed micro-batch can run as one row of real tokens, every document after the other, with its
`position_ids` restarting at each document: no padding at all (`forward.packed_for`). flash-attn's
varlen kernel confines attention to each document on a GPU. Elsewhere transformers would build a
block-diagonal mask over the whole row and attend over all of it (quadratic in the row, not in each
document: packing measured x0.94 on a CPU). `llmft_sdpa` is sdpa, except that given the documents'
boundaries (`cu_seq_lens_q`, as flash-attn takes them) it runs causal sdpa on each document's slice:
exactly each document's own attention, nothing computed across documents.

On a CUDA GPU in half precision the documents of a packed row go to PyTorch's own flash-attention
varlen kernel (`torch.nn.attention.varlen.varlen_attn`, torch >= 2.9) in one call instead of one
sdpa call each: the same attention, without the per-document loop (and its host sync on the bounds).

Outside a packed row the forward is transformers' sdpa call unchanged, so under autocast its losses equal
TRL's (the same kernel). Training on a CPU without a mask, the backward is `_CausalAttention`'s batched
matmuls instead of the CPU flash kernel's backward (about 3/4 of that kernel's time for short sequences):
the gradients then round otherwise than sdpa's, as close to float64's. An earlier version also computed
the *forward* as bf16 matmuls with a float32 softmax: it moved the first-step loss of SmolLM2-135M LoRA by
1.2e-2 from sdpa's (2.9261 vs 2.9146), so the forward stays sdpa's.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

try:
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # torch < 2.9
    varlen_attn = None

log = logging.getLogger(__name__)
NAME = "llmft_sdpa"
BOUNDARY_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
SEGMENTS_KEY = "llmft_pair_segments"  # (start, end, boolean mask) of each segment of one row (models.shared_prompt)
_varlen_failed: list[str] = []  # the reason the CUDA varlen kernel was given up, logged once


def unused_mask(device: torch.device) -> torch.Tensor:
    """The attention mask given with a packed or segmented row. transformers passes a 4-D mask through
    as it is; without one it would detect the packing from the position ids (a host sync) and build a
    [tokens, tokens] mask that `sdpa_per_document` never reads in those rows."""
    return torch.ones(1, 1, 1, 1, dtype=torch.bool, device=device)


def can_use_varlen(query: torch.Tensor, dropout: float) -> bool:
    """The CUDA varlen kernel applies (`LLMFT_VARLEN=0` turns it off: the per-document loop instead)."""
    return (varlen_attn is not None and query.is_cuda and query.dtype in (torch.bfloat16, torch.float16)
            and dropout == 0.0 and not _varlen_failed and os.environ.get("LLMFT_VARLEN", "1") != "0")


@functools.cache
def _varlen_parameters() -> frozenset[str]:
    return frozenset(inspect.signature(varlen_attn).parameters)


def varlen_causal(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bounds: torch.Tensor,
                  longest: int, scale: float | None) -> torch.Tensor:
    """Causal attention within each document of one packed row, [1, heads, tokens, head_dim] in,
    [1, tokens, heads, head_dim] out, by PyTorch's varlen flash kernel. Grouped-query heads are
    repeated where this torch's `varlen_attn` does not take `enable_gqa`."""
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [tokens, heads, head_dim]
    accepted = _varlen_parameters()
    options: dict = {}
    if "scale" in accepted:
        options["scale"] = scale
    elif scale is not None and abs(scale - q.shape[-1] ** -0.5) > 1e-12:  # torch 2.9: only the default scale
        raise ValueError(f"this torch's varlen_attn takes no scale, and the model's is {scale}")
    if "window_size" in accepted:
        options["window_size"] = (-1, 0)
    else:  # torch 2.9-2.10
        options["is_causal"] = True
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in accepted:
            options["enable_gqa"] = True
        else:
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    cu = bounds.to(device=q.device, dtype=torch.int32)
    return varlen_attn(q, k, v, cu, cu, longest, longest, **options).unsqueeze(0)


def sdpa_per_document(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, **kwargs) -> tuple[torch.Tensor, None]:
    """sdpa; with `cu_seq_lens_q` (one packed row), causal sdpa within each document; with
    `SEGMENTS_KEY` (one row of preference pairs sharing their prompts), sdpa within each segment under its mask."""
    bounds, longest, segments = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q"), kwargs.get(SEGMENTS_KEY)
    kwargs = {k: v for k, v in kwargs.items() if k not in BOUNDARY_KEYS and k != SEGMENTS_KEY}
    if segments is not None:
        return attend_segments(module, query, key, value, segments, **kwargs), None
    if bounds is None and uses_matmul_backward(module, query, key, value, attention_mask, kwargs):
        return causal_attention(query, key, value, kwargs.get("scaling")).transpose(1, 2).contiguous(), None
    if bounds is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    dropout = kwargs.get("dropout", 0.0)
    if can_use_varlen(query, dropout):
        try:
            return varlen_causal(query, key, value, bounds, int(longest or query.shape[2]),
                                 kwargs.get("scaling")), None
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, TypeError, ValueError) as err:  # an unsupported head size or GPU: the loop below
            _varlen_failed.append(f"{type(err).__name__}: {err}")
            log.warning("llmft_sdpa: PyTorch's varlen attention failed (%s); packed rows use per-document sdpa",
                        _varlen_failed[0])
    edges = bounds.tolist()
    return attend_segments(module, query, key, value, [(start, end, None) for start, end in zip(edges[:-1], edges[1:])
                                                        if end > start], **kwargs), None


MATMUL_BACKWARD_MAX_SCORES = 1 << 24  # scores a call: 64 MiB in float32, about 3x that at the backward's peak


def uses_matmul_backward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, kwargs: dict) -> bool:
    """Plain causal self-attention being trained on a CPU, short enough for `causal_attention`'s backward."""
    scores = query.shape[0] * query.shape[1] * query.shape[2] * key.shape[2]
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else causal  # as transformers' sdpa decides
    extras = ("position_bias", "sliding_window", "softcap", "output_attentions")  # what sdpa would have to apply
    return (query.device.type == "cpu" and torch.is_grad_enabled() and query.requires_grad and causal is True
            and attention_mask is None and 1 < query.shape[2] == key.shape[2] and not kwargs.get("dropout")
            and not any(kwargs.get(name) is not None and kwargs.get(name) is not False for name in extras)
            and same_dtype_for_sdpa(query, key, value)
            and query.shape[1] % key.shape[1] == 0 and scores <= MATMUL_BACKWARD_MAX_SCORES
            and os.environ.get("LLMFT_ATTENTION_BACKWARD", "matmul") == "matmul")


def same_dtype_for_sdpa(*tensors: torch.Tensor) -> bool:
    """sdpa gets one dtype: under autocast, float32/bf16/fp16 inputs cast to autocast's; otherwise equal ones."""
    dtypes = {t.dtype for t in tensors}
    if torch.is_autocast_enabled(tensors[0].device.type):
        return dtypes <= {torch.float32, torch.bfloat16, torch.float16}
    return len(dtypes) == 1


def causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None
                     ) -> torch.Tensor:
    """Causal sdpa, [batch, heads, tokens, head_dim] (key and value may have fewer, grouped heads): the
    forward is sdpa's own call, the same kernel on the same inputs as transformers' sdpa path, so the same
    values bit for bit; the backward is `_CausalAttention`'s."""
    device = query.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype
    return _CausalAttention.apply(query, key, value, dtype, scale)


class _CausalAttention(torch.autograd.Function):
    """The gradients of causal attention by batched matmuls over the whole [tokens, tokens] scores,
    softmax recomputed in float32. On a CPU the flash kernel's backward takes most of a short sequence's
    attention time (measured: about 30 of 40 ms for 8 x 185 tokens, 9 heads of 64); the scores of a
    training sequence are small there (`MATMUL_BACKWARD_MAX_SCORES`). The scores and their gradient are
    summed in float32 as in the flash kernel; the probabilities and the scores' gradient enter the last
    matmuls in the attention's dtype (bf16 under autocast). Only the gradients asked for are computed."""

    @staticmethod
    def forward(ctx, query, key, value, dtype, scale):
        q, k, v = (t.to(dtype) for t in (query, key, value))  # autocast's casts, made here to be kept
        with torch.autocast(query.device.type, enabled=False):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                 enable_gqa=k.shape[1] != q.shape[1])
        ctx.save_for_backward(q, k, v, out)
        ctx.scale = q.shape[-1] ** -0.5 if scale is None else scale
        ctx.dtypes = (query.dtype, key.dtype, value.dtype)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out = ctx.saved_tensors
        need_query, need_key, need_value = ctx.needs_input_grad[:3]
        batch, heads, tokens, head_dim = q.shape
        groups = heads // k.shape[1]
        grouped = (batch, k.shape[1], groups * tokens, head_dim)  # query heads of one key head, stacked
        q_g, grad_g = q.reshape(grouped), grad_out.to(q.dtype).reshape(grouped)
        wide = torch.promote_types(q.dtype, torch.float32)  # float32, or float64 for float64 inputs
        with torch.autocast(q.device.type, enabled=False):
            # scores and their gradient from float32 copies: the bf16 products are exact and summed in float32,
            # as the flash kernel sums them (a bf16 matmul would round the scores before the softmax)
            scores = (q_g.to(wide) @ k.to(wide).transpose(-1, -2)).mul_(ctx.scale)
            causal = torch.ones(tokens, tokens, dtype=torch.bool, device=q.device).tril_()
            scores.view(batch, k.shape[1], groups, tokens, tokens).masked_fill_(~causal, float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            del scores
            grad_value = probs.to(q.dtype).transpose(-1, -2) @ grad_g if need_value else None
            grad_scores = grad_query = grad_key = None
            if need_query or need_key:
                delta = (grad_out.to(wide) * out.to(wide)).sum(-1).reshape(*grouped[:3], 1)
                grad_scores = (grad_g.to(wide) @ v.to(wide).transpose(-1, -2)).sub_(delta).mul_(probs)
                del probs
                grad_scores = grad_scores.mul_(ctx.scale).to(q.dtype)
                grad_query = (grad_scores @ k).reshape(q.shape) if need_query else None
                grad_key = grad_scores.transpose(-1, -2) @ q_g if need_key else None
        return tuple(None if grad is None else grad.to(dtype)
                     for grad, dtype in zip((grad_query, grad_key, grad_value), ctx.dtypes)) + (None, None)


@torch.compiler.disable  # under `model.compile`, a graph break: the rows' layouts change every batch
def attend_segments(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    segments: list[tuple[int, int, torch.Tensor | None]], **kwargs) -> torch.Tensor:
    """sdpa over each (start, end, mask) slice of one row, [1, tokens, heads, head_dim]; no mask: causal."""
    kwargs.pop("is_causal", None)
    outputs = [sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                                      mask, **kwargs, is_causal=mask is None)[0]
               for start, end, mask in segments]
    return torch.cat(outputs, dim=1)


AttentionInterface.register(NAME, sdpa_per_document)
AttentionMaskInterface.register(NAME, sdpa_mask)
