"""Sampling responses from the policy for online methods (PPO, GRPO, RLOO): left-padded prompts,
temperature / top-p, stop at the end-of-turn token, and masks that cover exactly the generated
tokens up to and including the stop token (what the losses and the KL may see)."""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch

from llmft.models.forward import eval_mode


@dataclass(frozen=True)
class SamplingSpec:
    """How responses are drawn (a method's `sampling:` options)."""

    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"sampling.max_new_tokens={self.max_new_tokens}: must be at least 1")
        if self.temperature <= 0:
            raise ValueError(f"sampling.temperature={self.temperature}: must be > 0 (greedy is not sampling)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p={self.top_p}: must be in (0, 1]")


@dataclass
class Samples:
    """[B, W + N] rows: a prompt left-padded to width W, then its response right-padded to N."""

    sequences: torch.Tensor  # token ids
    attention_mask: torch.Tensor  # 1 on prompt tokens and response tokens (through the stop token)
    response_mask: torch.Tensor  # 1 on response tokens only (through the stop token)
    prompt_width: int  # W
    stopped: torch.Tensor  # [B] bool: the response ended with a stop token within max_new_tokens


def left_pad(prompts: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every prompt right-aligned: generation continues from the last
    column, which is never padding."""
    if not prompts or any(not p for p in prompts):
        raise ValueError("left_pad: every prompt needs at least one token")
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids):] = 1
    return input_ids, attention_mask


def response_mask(new_tokens: torch.Tensor, stop_ids: Collection[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, N], stopped [B]) for generated tokens: 1 up to and including each row's first stop
    token, 0 after it (where generation pads); a row that never stops keeps all N."""
    is_stop = torch.isin(new_tokens, torch.tensor(sorted(stop_ids), device=new_tokens.device))
    stops_before = is_stop.long().cumsum(dim=1) - is_stop.long()  # stop tokens strictly before t
    return (stops_before == 0).long(), is_stop.any(dim=1)


@torch.no_grad()
def sample(model: torch.nn.Module, prompts: list[list[int]], pad_token_id: int, stop_ids: Collection[int],
           spec: SamplingSpec, autocast_dtype: torch.dtype | None = None, greedy: bool = False) -> Samples:
    """One response per prompt (repeat a prompt for a group), drawn with dropout off, from torch's
    global generator (seeded by the run); `greedy`: the most likely token at every step instead (for
    evaluation: temperature and top-p are then unused)."""
    device = next(model.parameters()).device
    input_ids, prompt_mask = left_pad(prompts, pad_token_id)
    with eval_mode(model), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        sequences = model.generate(
            input_ids=input_ids.to(device), attention_mask=prompt_mask.to(device),
            max_new_tokens=spec.max_new_tokens, eos_token_id=sorted(stop_ids), pad_token_id=pad_token_id,
            **(dict(do_sample=False) if greedy else
               dict(do_sample=True, temperature=spec.temperature, top_p=spec.top_p, top_k=0)))
    width = input_ids.shape[1]
    generated, stopped = response_mask(sequences[:, width:], stop_ids)
    responses = torch.cat([torch.zeros_like(prompt_mask), generated.cpu()], dim=1).to(device)
    attention = torch.cat([prompt_mask, generated.cpu()], dim=1).to(device)
    return Samples(sequences, attention, responses, width, stopped)
