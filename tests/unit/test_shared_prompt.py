"""The one-row layout of preference pairs sharing their prompt (llmft.models.shared_prompt), by hand."""
from __future__ import annotations

import torch

from llmft.models.shared_prompt import segment_mask, shared_lengths, shared_prompt_layout

X = -100


def micro(chosen: list[list[int]], chosen_labels: list[list[int]], rejected: list[list[int]],
          rejected_labels: list[list[int]]) -> dict[str, torch.Tensor]:
    """A right-padded pair micro-batch (pad id 0)."""
    out = {}
    for side, rows, labels in (("chosen", chosen, chosen_labels), ("rejected", rejected, rejected_labels)):
        width = max(map(len, rows))
        out[f"{side}_input_ids"] = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        out[f"{side}_attention_mask"] = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        out[f"{side}_labels"] = torch.tensor([r + [X] * (width - len(r)) for r in labels])
    return out


def test_the_shared_prefix_is_the_common_start_and_stops_before_any_supervised_token():
    chosen = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 8], [5, 6, 7, 8], [5, 6, 0, 0]])
    rejected = torch.tensor([[5, 6, 9, 0], [5, 6, 7, 9], [4, 6, 7, 0], [5, 6, 7, 0]])
    chosen_labels = torch.tensor([[X, X, 7, 8], [X, X, 7, 8], [X, X, 7, 8], [X, X, X, X]])
    rejected_labels = torch.tensor([[X, X, 9, X], [X, X, 7, 9], [X, X, 7, X], [X, X, X, X]])
    # 1: the answers begin alike (7 on both sides), but 7 is supervised: not part of the prefix;
    # 3: no supervised token, the shorter sequence ends first
    assert shared_lengths(chosen, rejected, chosen_labels, rejected_labels, torch.tensor([4, 4, 4, 2]),
                          torch.tensor([3, 4, 3, 3])).tolist() == [2, 2, 0, 2]


def test_the_rejected_tokens_see_the_prefix_and_themselves_never_the_chosen_ones():
    mask = segment_mask(2, 2, 1, torch.device("cpu"))[0, 0]
    assert mask.tolist() == [[1, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0],
                             [1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 0],
                             [1, 1, 0, 0, 1]]


def test_two_pairs_in_one_row_with_each_supervised_token_predicted_from_its_own_context():
    layout = shared_prompt_layout(micro(
        chosen=[[5, 6, 7, 8], [1, 2, 3]], chosen_labels=[[X, X, 7, 8], [X, X, 3]],
        rejected=[[5, 6, 9], [1, 4, 4]], rejected_labels=[[X, X, 9], [X, 4, 4]]))
    # pair 0: prefix [5, 6], chosen [7, 8], rejected [9]; pair 1: prefix [1], chosen [2, 3], rejected [4, 4]
    assert layout.input_ids.tolist() == [[5, 6, 7, 8, 9, 1, 2, 3, 4, 4]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 2, 0, 1, 2, 1, 2]]
    assert [(start, end) for start, end, _ in layout.segments] == [(0, 5), (5, 10)]
    # chosen 0: 7 from position 1, 8 from 2 | chosen 1: 3 from 6 | rejected 0: 9 from the prefix's end, 1
    # | rejected 1: 4 from the prefix's end (5), 4 from 8
    assert layout.predictors.tolist() == [1, 2, 6, 1, 5, 8]
    assert layout.targets.tolist() == [7, 8, 3, 9, 4, 4]
    assert layout.groups.tolist() == [0, 0, 1, 2, 3, 3]  # chosen rows 0, 1; rejected rows 2, 3
    assert layout.n_groups == 4
