"""One autocast copy of an activation for every layer that reads it.

Under autocast each `nn.Linear` casts its float32 input to bf16 on its own. In a Llama layer the
attention's normalised input feeds q, k and v and their three LoRA `lora_A`s (six casts of one tensor), the
MLP's feeds gate and up and their two (four); every `lora_A` also keeps its copy for its weight's
gradient. `autocast_input(x)` makes the cast once and hands each caller its own alias of it: the same
values bit for bit, one copy kept instead of three (q, k, v) or two (gate, up), and each alias's backward
casts its gradient back to float32 by itself, as autocast's cast does, so the gradients are summed in
float32 as before.
"""
from __future__ import annotations

import torch

COPY_ATTRIBUTE = "_llmft_autocast_copy"  # on the float32 activation: its cast (`kept_cast`)


class _Alias(torch.autograd.Function):
    """`copy` (x cast outside autograd) as a function of x: a view of the shared copy forward; the
    gradient cast to x's dtype backward (what autocast's own cast, `ToCopyBackward`, does)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, copy: torch.Tensor) -> torch.Tensor:
        ctx.dtype = x.dtype
        return copy.view_as(copy)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.to(ctx.dtype), None


def autocast_input(x: torch.Tensor) -> torch.Tensor:
    """`x` as autocast would cast it for a matmul, the cast made once per tensor (and version): float32
    under bf16/fp16 autocast. Returned as it is (each reader's autocast casts it): anything else, inference
    tensors (no version counter), and inside `torch.compile`, which merges the casts itself (and could not
    guard on the version)."""
    device = x.device.type
    if x.dtype != torch.float32 or not torch.is_autocast_enabled(device) or torch.compiler.is_compiling() \
            or x.is_inference() or torch.get_autocast_dtype(device) == x.dtype:
        return x
    copy = kept_cast(x, COPY_ATTRIBUTE, x, torch.get_autocast_dtype(device))
    return _Alias.apply(x, copy) if torch.is_grad_enabled() and x.requires_grad else copy


def kept_cast(holder: object, attribute: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`tensor.to(dtype)` (without autograd), made once and kept as `holder.<attribute>` while the tensor
    (its version counter and storage) and the copy itself are unchanged."""
    key = (tensor._version, dtype, tensor.data_ptr())
    cached = getattr(holder, attribute, None)
    if cached is None or cached[0] != key or cached[1]._version != cached[2]:
        with torch.no_grad():
            copy = tensor.to(dtype)
        cached = (key, copy, copy._version)
        setattr(holder, attribute, cached)
    return cached[1]
