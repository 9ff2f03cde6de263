"""KTO and Bradley-Terry losses against float64 formulas written with the math module."""

from __future__ import annotations

import math

import torch

from llmft.losses import bradley_terry_loss, kto_loss

TOL = {"rtol": 1e-6, "atol": 1e-7}


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_kto_mixed_batch() -> None:
    gen = torch.Generator().manual_seed(11)
    pol = -torch.rand(6, generator=gen, dtype=torch.float64) * 30
    ref = -torch.rand(6, generator=gen, dtype=torch.float64) * 30
    desirable = torch.tensor([True, False, True, True, False, False])
    beta, wd, wu, kl = 0.3, 1.5, 0.7, 0.8
    losses, rewards = kto_loss(pol, ref, torch.tensor(kl, dtype=torch.float64), desirable,
                               beta=beta, desirable_weight=wd, undesirable_weight=wu)
    expected = []
    for p, r, d in zip(pol.tolist(), ref.tolist(), desirable.tolist()):
        lr = p - r
        expected.append(wd * (1 - sigmoid(beta * (lr - kl))) if d
                        else wu * (1 - sigmoid(beta * (kl - lr))))
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=torch.float64), **TOL)
    torch.testing.assert_close(rewards, beta * (pol - ref), **TOL)
    assert not rewards.requires_grad


def test_kto_kl_is_clamped_and_detached() -> None:
    pol = torch.tensor([-1.0, -2.0], requires_grad=True)
    ref = torch.tensor([-1.5, -1.0])
    kl = torch.tensor(-0.4, requires_grad=True)  # negative estimate -> reference point 0
    desirable = torch.tensor([True, False])
    losses, _ = kto_loss(pol, ref, kl, desirable, beta=0.5)
    # logratios 0.5 and -1.0, z0 = 0: [1 - sigmoid(0.25), 1 - sigmoid(0.5)]
    expected = torch.tensor([1 - sigmoid(0.25), 1 - sigmoid(0.5)])
    torch.testing.assert_close(losses, expected, **TOL)
    losses.sum().backward()
    assert kl.grad is None
    assert pol.grad is not None and torch.all(pol.grad != 0)
    # a python float works too
    torch.testing.assert_close(kto_loss(pol, ref, -0.4, desirable, beta=0.5)[0], expected, **TOL)


def test_kto_positive_kl_shifts_reference_point() -> None:
    pol, ref = torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0])
    losses, _ = kto_loss(pol, ref, 2.0, torch.tensor([True, False]), beta=1.0)
    # logratio 0, z0 = 2: desirable 1 - sigmoid(-2), undesirable 1 - sigmoid(2)
    torch.testing.assert_close(losses, torch.tensor([1 - sigmoid(-2.0), 1 - sigmoid(2.0)]), **TOL)


def test_bradley_terry() -> None:
    gen = torch.Generator().manual_seed(12)
    c = torch.randn(5, generator=gen, dtype=torch.float64) * 3
    r = torch.randn(5, generator=gen, dtype=torch.float64) * 3
    m = torch.rand(5, generator=gen, dtype=torch.float64)
    plain = [math.log1p(math.exp(-(a - b))) for a, b in zip(c.tolist(), r.tolist())]
    with_margin = [math.log1p(math.exp(-(a - b - d)))
                   for a, b, d in zip(c.tolist(), r.tolist(), m.tolist())]
    torch.testing.assert_close(bradley_terry_loss(c, r), torch.tensor(plain, dtype=torch.float64),
                               **TOL)
    torch.testing.assert_close(bradley_terry_loss(c, r, margin=m),
                               torch.tensor(with_margin, dtype=torch.float64), **TOL)
    # hand: c - r = 0 -> log 2; scalar margin 1 with c - r = 1 -> log 2 as well
    torch.testing.assert_close(
        bradley_terry_loss(
            torch.tensor([0.0, 3.0]), torch.tensor([0.0, 2.0]), margin=torch.tensor([0.0, 1.0])
        ),
        torch.tensor([math.log(2.0), math.log(2.0)]),
        **TOL,
    )
