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
`forward.pair_logp_sums` takes this layout only under `llmft_sdpa`, with a plain output layer, and where
no sliding attention window is shorter than the pair's sequences. With dropout on (preference methods
turn it off by default) the prefix's dropout mask is shared by both sides, where two forwards draw two.
On the bundled preference pairs (SmolLM2's template: its system prompt, a question, short answers)
the prompt is 69 tokens of a pair's 152 (chosen 6, rejected 7): 46% of the tokens are computed once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmft.losses import IGNORE_INDEX
from llmft.models.attention import SEGMENTS_KEY, unused_mask


@dataclass
class SharedPromptLayout:
    input_ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T]
    segments: list[tuple[int, int, torch.Tensor]]  # (start, end, mask [1, 1, L, L]: True = may attend)
    predictors: torch.Tensor  # [N] row positions whose hidden state predicts a supervised token
    targets: torch.Tensor  # [N] the token ids they predict
    groups: torch.Tensor  # [N] the sequence: chosen row b -> b, rejected row b -> B + b (in this order)
    n_groups: int  # 2B

    def model_inputs(self) -> dict:
        return {"input_ids": self.input_ids, "position_ids": self.position_ids, "use_cache": False,
                "attention_mask": unused_mask(self.input_ids.device), SEGMENTS_KEY: self.segments}


def first_supervised(labels: torch.Tensor) -> torch.Tensor:
    """Per row, the index of the first supervised token ([B]; the width where there is none)."""
    supervised = labels != IGNORE_INDEX
    return torch.where(supervised.any(1), supervised.int().argmax(1), labels.shape[1])


def shared_lengths(chosen: torch.Tensor, rejected: torch.Tensor, chosen_labels: torch.Tensor,
                   rejected_labels: torch.Tensor, chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor
                   ) -> torch.Tensor:
    """Per pair ([B], one width for all four [B, W]): the tokens the two sequences share at their start,
    stopping before either side's first supervised token and at the shorter one's end."""
    limit = torch.stack([chosen_lengths, rejected_lengths, first_supervised(chosen_labels),
                         first_supervised(rejected_labels)]).min(0).values
    columns = torch.arange(chosen.shape[1], device=chosen.device)
    stop = (chosen != rejected) | (columns >= limit[:, None])
    return torch.where(stop.any(1), stop.int().argmax(1), limit)


def segment_mask(shared: int, chosen_rest: int, rejected_rest: int, device: torch.device) -> torch.Tensor:
    """Causal over [prefix | chosen | rejected], the rejected part blind to the chosen part: [1, 1, L, L]."""
    length = shared + chosen_rest + rejected_rest
    mask = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    start = shared + chosen_rest
    mask[start:, shared:start] = False
    return mask[None, None]


def shared_prompt_layout(micro: dict[str, torch.Tensor]) -> SharedPromptLayout:
    """The one-row layout of a right-padded pair micro-batch (`chosen_*` and `rejected_*` fields).

    On a GPU it reads the sizes and the supervised positions on the host (two syncs) and copies three
    small index tensors to the device; the rest is index arithmetic there."""
    device = micro["chosen_input_ids"].device
    width = max(micro["chosen_input_ids"].shape[1], micro["rejected_input_ids"].shape[1])
    ids, labels, lengths = {}, {}, {}
    for side in ("chosen", "rejected"):
        pad = width - micro[f"{side}_input_ids"].shape[1]
        ids[side] = F.pad(micro[f"{side}_input_ids"], (0, pad))
        labels[side] = F.pad(micro[f"{side}_labels"], (0, pad), value=IGNORE_INDEX)
        lengths[side] = micro[f"{side}_attention_mask"].sum(1)
    shared = shared_lengths(ids["chosen"], ids["rejected"], labels["chosen"], labels["rejected"],
                            lengths["chosen"], lengths["rejected"])
    n_pairs = shared.shape[0]
    sizes = torch.stack([lengths["chosen"], lengths["rejected"], shared], 1).tolist()
    # where token t of each sequence sits in the row ([B, W], -1 past its end), and what fills the row
    at = {side: torch.full((n_pairs, width), -1, dtype=torch.long) for side in ids}
    source, positions, segments, start = [], [], [], 0
    for b, (chosen_length, rejected_length, prefix) in enumerate(sizes):
        at["chosen"][b, :chosen_length] = start + torch.arange(chosen_length)
        at["rejected"][b, :prefix] = at["chosen"][b, :prefix]
        rejected_rest = rejected_length - prefix
        at["rejected"][b, prefix:rejected_length] = start + chosen_length + torch.arange(rejected_rest)
        source += [b * width + torch.arange(chosen_length),
                   (n_pairs + b) * width + torch.arange(prefix, rejected_length)]
        positions += [torch.arange(chosen_length), torch.arange(prefix, rejected_length)]
        end = start + chosen_length + rejected_rest
        segments.append((start, end, segment_mask(prefix, chosen_length - prefix, rejected_rest, device)))
        start = end
    flat = torch.cat([ids["chosen"], ids["rejected"]]).flatten()
    both_labels = torch.cat([labels["chosen"], labels["rejected"]])  # chosen rows 0..B-1, rejected B..2B-1
    both_at = torch.cat([at["chosen"], at["rejected"]]).to(device)
    rows, cols = torch.nonzero(both_labels[:, 1:] != IGNORE_INDEX, as_tuple=True)
    return SharedPromptLayout(flat[torch.cat(source).to(device)][None], torch.cat(positions).to(device)[None],
                              segments, both_at[rows, cols], both_labels[rows, cols + 1], rows, 2 * n_pairs)
