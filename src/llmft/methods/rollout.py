"""A rollout: the sampled responses of one training iteration and everything computed about them.

A typed container (as torchtune's Trajectory), so a method cannot misspell a field. Rows are
[prompt left-padded to W | response right-padded to N]; every per-token field is [B, N] over the
response columns, aligned with `response_mask` (1 on generated tokens through the stop token).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class Rollout:
    sequences: torch.Tensor  # [B, W + N] token ids
    attention_mask: torch.Tensor  # [B, W + N]: prompt tokens and response tokens through the stop token
    response_mask: torch.Tensor  # [B, N]
    prompt_width: int  # W
    stopped: torch.Tensor  # [B] bool: ended with a stop token within max_new_tokens
    scores: torch.Tensor  # [B] float: what the reward function returned
    rewards: torch.Tensor  # [B] float: scores after the stop penalty (what the method optimises)
    meta: list[dict]  # per row: id, task, answer, prompt, ...
    completions: list[str]  # decoded responses (without the stop token)
    ref_logps: torch.Tensor | None = None  # [B, N] reference log-probs
    old_logps: torch.Tensor | None = None  # [B, N] policy log-probs at sampling time (None: one update, on-policy)
    values: torch.Tensor | None = None  # [B, N] value-head estimates at sampling time (PPO)
    advantages: torch.Tensor | None = None  # [B, N]
    returns: torch.Tensor | None = None  # [B, N] value targets (PPO)

    def __len__(self) -> int:
        return self.sequences.shape[0]

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)

    def select(self, rows: torch.Tensor | list[int]) -> Rollout:
        """The rollout restricted to `rows`, trimmed to the columns they use (less padding per micro-batch)."""
        index = torch.as_tensor(rows, dtype=torch.long)
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                picked[f.name] = value[index.to(value.device)]
            elif isinstance(value, list):
                picked[f.name] = [value[i] for i in index.tolist()]
        return replace(self, **picked).trimmed()

    def trimmed(self) -> Rollout:
        """Drop prompt columns that are padding in every row and response columns past every row's end."""
        width = self.prompt_width
        used = self.attention_mask[:, :width].any(dim=0).nonzero()
        lead = int(used[0]) if len(used) else width - 1
        lead = min(lead, width - 1)  # keep at least the last prompt column (the first response's logits)
        ends = self.response_mask.any(dim=0).nonzero()
        tail = int(ends[-1]) + 1 if len(ends) else 1
        changed = {"sequences": self.sequences[:, lead : width + tail],
                   "attention_mask": self.attention_mask[:, lead : width + tail], "prompt_width": width - lead}
        for name in ("response_mask", "ref_logps", "old_logps", "values", "advantages", "returns"):
            value = getattr(self, name)
            if value is not None:
                changed[name] = value[:, :tail]
        return replace(self, **changed)
