"""The rollout container: selecting rows keeps every field aligned and trims shared padding."""
import math

import torch

from llmft.methods.online import explained_variance
from llmft.methods.rollout import Rollout


def rollout() -> Rollout:
    # W = 3 prompt columns (row 0 has 1 prompt token, row 1 has 2), N = 4 response columns
    sequences = torch.tensor([[0, 0, 11, 21, 22, 9, 0], [0, 12, 13, 31, 9, 0, 0]])
    attention = torch.tensor([[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 0, 0]])
    response = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    per_token = torch.arange(8, dtype=torch.float32).view(2, 4)
    return Rollout(sequences, attention, response, 3, torch.tensor([True, True]), torch.tensor([1.0, 0.0]),
                   torch.tensor([1.0, 0.0]), [{"id": "a"}, {"id": "b"}], ["x", "y"], ref_logps=per_token,
                   old_logps=per_token + 10)


def test_select_keeps_rows_aligned_and_trims_columns_no_row_uses():
    part = rollout().select([1])
    assert part.meta == [{"id": "b"}] and part.completions == ["y"] and part.rewards.tolist() == [0.0]
    assert part.prompt_width == 2  # the first prompt column was padding in row 1
    assert part.sequences.tolist() == [[12, 13, 31, 9]] and part.attention_mask.tolist() == [[1, 1, 1, 1]]
    assert part.response_mask.tolist() == [[1, 1]]  # columns past the row's stop token are gone
    assert part.ref_logps.tolist() == [[4.0, 5.0]] and part.old_logps.tolist() == [[14.0, 15.0]]
    both = rollout().select([1, 0])
    assert both.prompt_width == 2 and both.response_mask.shape == (2, 3)  # row 0 uses 3 response columns
    assert both.sequences[:, both.prompt_width:].tolist() == [[31, 9, 0], [21, 22, 9]]
    assert both.values is None and both.advantages is None


def test_explained_variance():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    returns = torch.tensor([[1.0, 2.0, 99.0], [3.0, 4.0, 5.0]])
    assert explained_variance(returns, returns, mask) == 1.0
    constant = torch.full_like(returns, 3.0)
    assert math.isclose(explained_variance(constant, returns, mask), 0.0, abs_tol=1e-12)
    assert explained_variance(-returns, returns, mask) < 0


def test_group_methods_learn_only_from_groups_whose_rewards_differ():
    from types import SimpleNamespace

    from llmft.methods.grpo import GRPO

    base = rollout()
    four = Rollout(*(torch.cat([t, t]) if isinstance(t, torch.Tensor) and t.dim() else t for t in
                     (base.sequences, base.attention_mask, base.response_mask)), 3, torch.ones(4, dtype=torch.bool),
                   torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([1.0, 0.0, 1.0, 1.0]),
                   [{"id": i} for i in "abcd"], list("wxyz"))
    method = SimpleNamespace(skip_uniform_groups=True, group_size=2)
    assert [m["id"] for m in GRPO.learning_rows(method, four).meta] == ["a", "b"]  # group (c, d) is uniform
    method.group_size = 4
    assert len(GRPO.learning_rows(method, four)) == 4
    four.rewards = torch.ones(4)
    assert len(GRPO.learning_rows(method, four)) == 0
    method.skip_uniform_groups = False
    assert len(GRPO.learning_rows(method, four)) == 4
