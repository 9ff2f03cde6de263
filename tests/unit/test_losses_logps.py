"""token_logps / sequence_logps against float64 references written with the math module."""

from __future__ import annotations

import math

import pytest
import torch

from llmft.losses import sequence_logps, token_logps

TOL = {"rtol": 1e-6, "atol": 1e-6}


def ref_token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Plain-Python float64: out[b][t] = log softmax(logits[b][t-1])[labels[b][t]]."""
    rows = logits.double().tolist()
    labs = labels.tolist()
    out = []
    for b, seq in enumerate(labs):
        line = [0.0]
        for t in range(1, len(seq)):
            if seq[t] == -100:
                line.append(0.0)
                continue
            z = rows[b][t - 1]
            m = max(z)
            lse = m + math.log(sum(math.exp(v - m) for v in z))
            line.append(z[seq[t]] - lse)
        out.append(line)
    return torch.tensor(out, dtype=torch.float64)


def make_batch(batch: int = 3, length: int = 7, vocab: int = 11, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=gen) * 3.0
    labels = torch.randint(0, vocab, (batch, length), generator=gen)
    labels[0, :3] = -100  # prompt
    labels[1, -2:] = -100  # padding
    labels[2, 4] = -100  # a hole
    return logits, labels


def test_hand_computed_value() -> None:
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.5, -1.0, 0.0], [9.0, 9.0, 9.0]]])
    labels = torch.tensor([[-100, 2, 0]])
    out = token_logps(logits, labels)
    # t=1: logits[0] = [1, 2, 3], label 2 -> 3 - log(e + e^2 + e^3) = -0.40760596...
    # t=2: logits[1] = [0.5, -1, 0], label 0 -> 0.5 - log(e^0.5 + e^-1 + 1) = -0.57593942...
    expected = torch.tensor(
        [
            [
                0.0,
                3.0 - math.log(math.e + math.e**2 + math.e**3),
                0.5 - math.log(math.exp(0.5) + math.exp(-1.0) + 1.0),
            ]
        ]
    )
    torch.testing.assert_close(out, expected, **TOL)
    assert abs(out[0, 1].item() - (-0.40760596)) < 1e-6


def test_matches_reference_and_zeros() -> None:
    logits, labels = make_batch()
    out = token_logps(logits, labels)
    assert out.shape == labels.shape
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref_token_logps(logits, labels), **TOL)
    assert torch.all(out[:, 0] == 0)
    assert torch.all(out[labels == -100] == 0)
    assert torch.all(out[:, 1:][labels[:, 1:] != -100] < 0)


def test_label_at_t0_is_ignored() -> None:
    # labels[:, 0] has no preceding token: whatever it holds, out[:, 0] = 0
    logits, labels = make_batch(seed=1)
    labels[:, 0] = 3
    out = token_logps(logits, labels)
    assert torch.all(out[:, 0] == 0)


def test_single_token_sequence() -> None:
    out = token_logps(torch.randn(2, 1, 5), torch.tensor([[1], [2]]))
    torch.testing.assert_close(out, torch.zeros(2, 1))


def test_gradient_flows() -> None:
    logits, labels = make_batch(seed=2)
    logits.requires_grad_(True)
    token_logps(logits, labels).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # the last position predicts nothing and must get no gradient
    assert torch.all(logits.grad[:, -1] == 0)


def test_bf16_logits_give_float32_close_to_float64() -> None:
    logits, labels = make_batch(seed=3)
    low = logits.to(torch.bfloat16)
    out = token_logps(low, labels)
    assert out.dtype == torch.float32
    # the reference sees the same (bf16-rounded) numbers, in float64
    ref = ref_token_logps(low.double(), labels)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_float64_logits_stay_float64() -> None:
    logits, labels = make_batch(seed=4)
    out = token_logps(logits.double(), labels)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref_token_logps(logits, labels), rtol=1e-12, atol=1e-12)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="logits"):
        token_logps(torch.randn(2, 4, 5), torch.zeros(2, 3, dtype=torch.long))


def test_sequence_sum_and_average() -> None:
    logits, labels = make_batch(seed=5)
    ref = ref_token_logps(logits, labels)
    sums, means = [], []
    for b, row in enumerate(ref):
        n = sum(1 for t in range(1, labels.shape[1]) if labels[b, t].item() != -100)
        sums.append(sum(row.tolist()))
        means.append(sum(row.tolist()) / n)
    sums_t = torch.tensor(sums, dtype=torch.float64)
    means_t = torch.tensor(means, dtype=torch.float64)
    torch.testing.assert_close(sequence_logps(logits, labels).double(), sums_t, **TOL)
    torch.testing.assert_close(
        sequence_logps(logits, labels, average=True).double(), means_t, **TOL
    )
    # sum and average really differ here (different lengths)
    assert not torch.allclose(sums_t, means_t)


def test_sequence_average_with_no_supervised_token_raises() -> None:
    logits, labels = make_batch(seed=6)
    labels[1, 1:] = -100
    torch.testing.assert_close(sequence_logps(logits, labels)[1], torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"\[1\]"):
        sequence_logps(logits, labels, average=True)
