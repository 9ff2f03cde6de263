"""Rollout masks: left padding for generation and the response mask through the stop token."""
import pytest
import torch

from llmft.models.sampling import SamplingSpec, left_pad, response_mask

STOP, PAD = 2, 0


def test_left_pad_leaves_no_padding_in_the_last_column():
    ids, mask = left_pad([[5, 6, 7], [8], [9, 10]], PAD)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert mask[:, -1].all()
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[5], []], PAD)


def test_response_mask_covers_the_generated_tokens_through_the_first_stop():
    new = torch.tensor([[11, 12, STOP, PAD, PAD],   # stopped at 2: the stop token is part of the response
                        [STOP, PAD, PAD, PAD, PAD],  # an empty answer: just the stop token
                        [11, 12, 13, 14, 15],         # never stopped: all 5 count, flagged
                        [11, STOP, 12, STOP, PAD]])   # only up to the first stop
    mask, stopped = response_mask(new, {STOP, 99})
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert stopped.tolist() == [True, True, False, True]


@pytest.mark.parametrize("bad, message", [({"temperature": 0}, "temperature=0"), ({"top_p": 1.5}, "top_p=1.5"),
                                          ({"max_new_tokens": 0}, "max_new_tokens=0")])
def test_sampling_spec_refuses_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        SamplingSpec(**bad)
