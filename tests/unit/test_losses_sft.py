"""sft_loss / sft_loss_sum: token-weighted NLL against a plain-Python float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

from llmft.losses import sft_loss, sft_loss_sum


def ref_nll_terms(logits: torch.Tensor, labels: torch.Tensor) -> list[list[float]]:
    """Per sequence, the list of -log p(label_t | < t) over supervised positions (float64)."""
    rows = logits.double().tolist()
    out = []
    for b, seq in enumerate(labels.tolist()):
        terms = []
        for t in range(1, len(seq)):
            if seq[t] == -100:
                continue
            z = rows[b][t - 1]
            lse = math.log(sum(math.exp(v) for v in z))
            terms.append(lse - z[seq[t]])
        out.append(terms)
    return out


def two_sequences():
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 6, 9, generator=gen) * 2.0
    labels = torch.randint(0, 9, (2, 6), generator=gen)
    labels[0, :5] = -100  # 1 supervised token (t = 5)
    labels[1, :2] = -100  # 4 supervised tokens (t = 2..5)
    return logits, labels


def test_token_weighted_not_mean_of_sequence_means() -> None:
    logits, labels = two_sequences()
    terms = ref_nll_terms(logits, labels)
    assert [len(t) for t in terms] == [1, 4]
    token_mean = sum(sum(t) for t in terms) / 5
    mean_of_means = sum(sum(t) / len(t) for t in terms) / 2
    assert abs(token_mean - mean_of_means) > 1e-2  # the two conventions differ on this batch
    loss = sft_loss(logits, labels)
    assert loss.dim() == 0
    torch.testing.assert_close(loss.double(), torch.tensor(token_mean, dtype=torch.float64),
                               rtol=1e-6, atol=1e-6)


def test_sum_and_count() -> None:
    logits, labels = two_sequences()
    terms = ref_nll_terms(logits, labels)
    total, count = sft_loss_sum(logits, labels)
    assert int(count) == 5
    torch.testing.assert_close(total.double(), torch.tensor(sum(sum(t) for t in terms),
                                                            dtype=torch.float64),
                               rtol=1e-6, atol=1e-6)


def test_matches_cross_entropy() -> None:
    logits, labels = two_sequences()
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 9).double(), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(sft_loss(logits, labels).double(), expected, rtol=1e-6, atol=1e-6)


def test_bf16_logits() -> None:
    logits, labels = two_sequences()
    low = logits.to(torch.bfloat16)
    terms = ref_nll_terms(low.double(), labels)
    loss = sft_loss(low, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), torch.tensor(sum(sum(t) for t in terms) / 5,
                                                           dtype=torch.float64),
                               rtol=1e-5, atol=1e-5)


def test_no_supervised_token_raises() -> None:
    logits, labels = two_sequences()
    labels[:] = -100
    labels[:, 0] = 1  # a label at t = 0 predicts nothing: still no supervised token
    with pytest.raises(ValueError, match="no supervised token"):
        sft_loss(logits, labels)
    total, count = sft_loss_sum(logits, labels)  # the sum form does not raise
    assert int(count) == 0 and total.item() == 0.0


def test_gradient() -> None:
    logits, labels = two_sequences()
    logits.requires_grad_(True)
    sft_loss(logits, labels).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
