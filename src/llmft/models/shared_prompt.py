"""Preference pairs with their shared prompt computed once.

A pair's chosen and rejected sequences begin with the same prompt; the concatenated forward
(`forward.concat_pair`) runs that prompt twice. Here every pair of an unpacked micro-batch becomes one
segment of a single row: the shared prefix, then the chosen continuation, then the rejected one, with
positions as in each sequence alone (the rejected continuation's restart after the prefix). Attention
inside a segment is causal, except that rejected tokens do not see the chosen ones
(`attention.sdpa_per_document` reads `SEGMENTS_KEY`): every token has exactly the context it has in its
own sequence, so log-probs are those of the two separate forwards, for the prefix's compute once.

The next-token shift no longer lines up everywhere (the token before the first rejected one is the
prefix's last, not its neighbour in the row), so the layout lists, for every supervised token, the row
position that predicts it (`predictors`) with its id (`targets`) and its sequence (`groups`: chosen
rows 0..B-1, rejected B..2B-1, as `concat_pair` orders them).

The shared prefix stops before the first supervised token of either side, so it is prompt only.
On the bundled preference pairs (SmolLM2's template: its system prompt, a question, short answers)
the prompt is 69 tokens of a pair's 152 (chosen 6, rejected 7): 46% of the tokens are computed once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from llmft.losses import IGNORE_INDEX
from llmft.models.attention import SEGMENTS_KEY


@dataclass
class SharedPromptLayout:
    input_ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T]
    segments: list[tuple[int, int, torch.Tensor]]  # (start, end, mask [1, 1, L, L]: True = may attend)
    predictors: torch.Tensor  # [N] row positions whose hidden state predicts a supervised token
    targets: torch.Tensor  # [N] the token ids they predict
    groups: torch.Tensor  # [N] the sequence: chosen row b -> b, rejected row b -> B + b
    n_groups: int  # 2B

    def model_inputs(self) -> dict:
        return {"input_ids": self.input_ids, "position_ids": self.position_ids, "use_cache": False,
                SEGMENTS_KEY: self.segments}


def shared_length(chosen: torch.Tensor, rejected: torch.Tensor, chosen_labels: torch.Tensor,
                  rejected_labels: torch.Tensor) -> int:
    """Tokens the two sequences share at their start, stopping before either side's first supervised token."""
    limit = min(len(chosen), len(rejected))
    for labels in (chosen_labels, rejected_labels):
        supervised = torch.nonzero(labels != IGNORE_INDEX).flatten()
        if len(supervised):
            limit = min(limit, int(supervised[0]))
    differ = torch.nonzero(chosen[:limit] != rejected[:limit]).flatten()
    return int(differ[0]) if len(differ) else limit


def segment_mask(shared: int, chosen_rest: int, rejected_rest: int, device: torch.device) -> torch.Tensor:
    """Causal over [prefix | chosen | rejected], the rejected part blind to the chosen part: [1, 1, L, L]."""
    length = shared + chosen_rest + rejected_rest
    mask = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    start = shared + chosen_rest
    mask[start:, shared:start] = False
    return mask[None, None]


def shared_prompt_layout(micro: dict[str, torch.Tensor]) -> SharedPromptLayout:
    """The one-row layout of a right-padded pair micro-batch (`chosen_*` and `rejected_*` fields)."""
    n_pairs = micro["chosen_input_ids"].shape[0]
    device = micro["chosen_input_ids"].device
    ids, positions, segments, predictors, targets, groups = [], [], [], [], [], []
    start = 0
    for b in range(n_pairs):
        side = {}
        for name in ("chosen", "rejected"):
            length = int(micro[f"{name}_attention_mask"][b].sum())
            side[name] = (micro[f"{name}_input_ids"][b, :length], micro[f"{name}_labels"][b, :length])
        (chosen, chosen_labels), (rejected, rejected_labels) = side["chosen"], side["rejected"]
        shared = shared_length(chosen, rejected, chosen_labels, rejected_labels)
        chosen_rest, rejected_rest = len(chosen) - shared, len(rejected) - shared
        ids += [chosen, rejected[shared:]]
        positions += [torch.arange(len(chosen), device=device), torch.arange(shared, len(rejected), device=device)]
        # where token t of each sequence sits in the row
        chosen_at = start + torch.arange(len(chosen), device=device)
        rejected_at = torch.cat([chosen_at[:shared], start + len(chosen) + torch.arange(rejected_rest, device=device)])
        for group, at, labels in ((b, chosen_at, chosen_labels), (n_pairs + b, rejected_at, rejected_labels)):
            t = torch.nonzero(labels[1:] != IGNORE_INDEX).flatten() + 1
            predictors.append(at[t - 1])
            targets.append(labels[t])
            groups.append(torch.full_like(t, group))
        end = start + shared + chosen_rest + rejected_rest
        segments.append((start, end, segment_mask(shared, chosen_rest, rejected_rest, device)))
        start = end
    return SharedPromptLayout(torch.cat(ids)[None], torch.cat(positions)[None], segments, torch.cat(predictors),
                              torch.cat(targets), torch.cat(groups), 2 * n_pairs)
