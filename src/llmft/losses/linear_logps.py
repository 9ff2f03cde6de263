"""Label log-probabilities straight from hidden states, in chunks: the [N, V] logits never exist at once.

A plain `token_logps(lm_head(hidden), labels)` keeps the logits for the backward pass: N x V floats
(49,152 a row for SmolLM2, 128,256 for Llama 3), plus a float32 copy and its gradient when the model
runs in half precision. `linear_token_logps` computes the logits a chunk of rows at a time, keeps
only what the backward needs, and frees each chunk before the next:

- frozen projection (LoRA, QLoRA): the gradient with respect to the hidden state is
  `g * (W[y] - softmax(h W^T) W)`; when the hidden states need a gradient, the forward computes the
  bracket per chunk (one more matmul, the one the backward would otherwise do) and saves it, [N, H].
  The backward is a multiplication. Without autograd (a reference model, evaluation) nothing is kept.
- trainable projection (full fine-tuning): the forward saves the hidden states only; the backward
  recomputes each chunk's logits and forms the gradients of the hidden states and of the weight.

In float32, values and gradients equal the plain path's to rounding (tests: 1e-5, and gradcheck in
float64). Under autocast the matmuls run in bf16/fp16 as `nn.Linear`'s would, in other chunks than one
product, so results are close to the plain autocast path's, not equal (tests bound the difference).

On a CPU a chunk's float32 logits are kept under 32 MiB (`CPU_CHUNK_BYTES`): glibc gives a block of
32 MiB or more its own fresh mapping on every allocation (its largest mmap threshold, which
`llmft.allocator` sets) and each 4 KiB page of it is faulted in again. Measured on a 2-core CPU, 288
rows of SmolLM2 (49,152 a row) with a frozen bf16 head, forward and backward: 167 ms with one chunk of
1,024 rows (56 MiB: 13,825 page faults a call), 87 ms with 165-row chunks; 1,312 rows: 521 -> 393 ms.
"""

from __future__ import annotations

import torch

from ._utils import compute_dtype

DEFAULT_CHUNK_ROWS = 1024
CPU_CHUNK_BYTES = 31 << 20  # a CPU chunk's float32 logits: under glibc's largest mmap threshold (32 MiB)


def default_chunk_rows(hidden: torch.Tensor, weight: torch.Tensor) -> int:
    """`DEFAULT_CHUNK_ROWS`; on a CPU at most as many rows as keep a chunk's logits within `CPU_CHUNK_BYTES`."""
    if hidden.device.type != "cpu":
        return DEFAULT_CHUNK_ROWS
    row_bytes = weight.shape[0] * compute_dtype(hidden.dtype).itemsize  # float32 logits, float64 for float64
    return max(1, min(DEFAULT_CHUNK_ROWS, CPU_CHUNK_BYTES // row_bytes))


def _matmul_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the projection runs in: autocast's when it is on (as `nn.Linear` would), else the inputs'."""
    if torch.is_autocast_enabled(hidden.device.type):
        return torch.get_autocast_dtype(hidden.device.type)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _logit_grad(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(target) per row, d log p(target) / d logits = onehot(target) - softmax) for one chunk, float32
    or wider, each gradient row times `scale` when given. Matmul in `hidden`'s dtype; the bias (already
    float32 or wider) is added, and the softmax taken, in float32."""
    logits = torch.nn.functional.linear(hidden, weight)
    logits = logits.to(compute_dtype(logits.dtype))
    if bias is not None:
        logits.add_(bias)
    target_logits = logits.gather(-1, targets.unsqueeze(-1))
    # torch.logsumexp's own steps (max, finite-masked, exp, sum, log, + max), in the logits' storage:
    # the same values bit for bit, without its temporary [rows, V] copy, and exp(x - max) is reused
    # for the softmax (one pass instead of logsumexp's sub and exp again).
    maxes = logits.amax(dim=-1, keepdim=True)
    maxes.masked_fill_(maxes.abs() == float("inf"), 0)
    exps = logits.sub_(maxes).exp_()
    sums = exps.sum(dim=-1, keepdim=True)
    lse = sums.log().add_(maxes)
    logps = (target_logits - lse).squeeze(-1)
    grad = exps.mul_(sums.reciprocal_().neg_())  # -softmax, in the logits' storage
    grad.scatter_add_(-1, targets.unsqueeze(-1), torch.ones_like(logps).unsqueeze(-1))
    return logps, grad if scale is None else grad.mul_(scale.unsqueeze(-1))


class _LinearTokenLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk_rows: int) -> torch.Tensor:
        dtype = _matmul_dtype(hidden, weight)
        frozen = not (weight.requires_grad or (bias is not None and bias.requires_grad))
        ctx.chunk_rows, ctx.frozen, ctx.hidden_dtype, ctx.dtype = chunk_rows, frozen, hidden.dtype, dtype
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            b = None if bias is None else bias.to(compute_dtype(dtype))
            out = torch.empty(h.shape[0], dtype=compute_dtype(dtype), device=h.device)
            hidden_grad = torch.empty_like(h) if frozen and hidden.requires_grad else None
            for start in range(0, h.shape[0], chunk_rows):
                rows = slice(start, start + chunk_rows)
                out[rows], grad = _logit_grad(h[rows], w, b, targets[rows])
                if hidden_grad is not None:
                    hidden_grad[rows] = grad.to(dtype) @ w
        if frozen:
            ctx.save_for_backward(hidden_grad)
        else:
            ctx.save_for_backward(hidden, weight, bias, targets)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.frozen:
            (hidden_grad,) = ctx.saved_tensors
            grad_hidden = None if hidden_grad is None else (hidden_grad * grad_out.unsqueeze(-1)).to(ctx.hidden_dtype)
            return grad_hidden, None, None, None, None
        hidden, weight, bias, targets = ctx.saved_tensors
        dtype = ctx.dtype
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            b = None if bias is None else bias.to(compute_dtype(dtype))
            grad_hidden = torch.empty_like(h) if ctx.needs_input_grad[0] else None
            grad_weight = torch.zeros_like(weight, dtype=compute_dtype(dtype)) if ctx.needs_input_grad[1] else None
            grad_bias = torch.zeros_like(b) if b is not None and ctx.needs_input_grad[2] else None
            for start in range(0, h.shape[0], ctx.chunk_rows):
                rows = slice(start, start + ctx.chunk_rows)
                _, grad = _logit_grad(h[rows], w, b, targets[rows], grad_out[rows])
                if grad_bias is not None:
                    grad_bias += grad.sum(0)
                grad = grad.to(dtype)
                if grad_hidden is not None:
                    grad_hidden[rows] = grad @ w
                if grad_weight is not None:
                    grad_weight += grad.t() @ h[rows]
        return (None if grad_hidden is None else grad_hidden.to(ctx.hidden_dtype),
                None if grad_weight is None else grad_weight.to(weight.dtype),
                None if grad_bias is None else grad_bias.to(bias.dtype), None, None)


def linear_token_logps(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                       bias: torch.Tensor | None = None, chunk_rows: int | None = None) -> torch.Tensor:
    """log softmax(hidden @ weight.T + bias)[n, targets[n]] for each row n, without the [N, V] logits.

    hidden [N, H] (the final hidden states at the positions that predict a supervised token), weight
    [V, H] (the output projection), targets [N] (token ids in [0, V)), bias [V] or None -> [N], float32
    (float64 for float64 inputs). Same value and gradients as `token_logps` on the full logits; memory
    for the logits is one chunk of `chunk_rows` (default `default_chunk_rows`) x V floats. Under
    autocast the matmuls run in the autocast dtype and the softmax in float32, as the plain path does.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"linear_token_logps expects hidden [N, H] and weight [V, H]; got {tuple(hidden.shape)} "
                         f"and {tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"linear_token_logps expects targets [N] for hidden [N, H]; got {tuple(targets.shape)}")
    chunk_rows = default_chunk_rows(hidden, weight) if chunk_rows is None else chunk_rows
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    return _LinearTokenLogps.apply(hidden, weight, bias, targets, chunk_rows)
