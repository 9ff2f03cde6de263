"""DPO / IPO / hinge / SimPO / ORPO against float64 formulas written with the math module."""

from __future__ import annotations

import math

import pytest
import torch

from llmft.losses import dpo_loss, hinge_loss, ipo_loss, orpo_loss, simpo_loss

TOL = {"rtol": 1e-6, "atol": 1e-7}


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def inputs(seed: int = 0, n: int = 6):
    gen = torch.Generator().manual_seed(seed)
    return tuple(
        -(torch.rand(n, generator=gen, dtype=torch.float64) * 40 + 1) for _ in range(4)
    )


def t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_dpo(beta: float, ls: float) -> None:
    pc, pr, rc, rr = inputs()
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=ls)
    ref, ref_c, ref_r = [], [], []
    for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist()):
        h = (a - b) - (c - d)
        ref.append(-(1 - ls) * logsigmoid(beta * h) - ls * logsigmoid(-beta * h))
        ref_c.append(beta * (a - c))
        ref_r.append(beta * (b - d))
    torch.testing.assert_close(losses, t(ref), **TOL)
    torch.testing.assert_close(cr, t(ref_c), **TOL)
    torch.testing.assert_close(rj, t(ref_r), **TOL)
    assert not cr.requires_grad


def test_dpo_label_smoothing_changes_value() -> None:
    pc, pr, rc, rr = inputs(1)
    plain = dpo_loss(pc, pr, rc, rr, beta=0.1)[0]
    smooth = dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.3)[0]
    h = ((pc - pr) - (rc - rr)) * 0.1
    # smoothing adds ls * (logsigmoid(z) - logsigmoid(-z)) = ls * z  (exact identity)
    torch.testing.assert_close(smooth - plain, 0.3 * h, **TOL)


def test_dpo_hand_value_and_gradients() -> None:
    # h = (-1 - -3) - (-2 - -2) = 2, beta = 0.5 -> loss = -log sigmoid(1) = log(1 + e^-1)
    pc = torch.tensor([-1.0], requires_grad=True)
    pr = torch.tensor([-3.0], requires_grad=True)
    losses, _, _ = dpo_loss(pc, pr, torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    torch.testing.assert_close(losses, torch.tensor([math.log1p(math.exp(-1.0))]), **TOL)
    losses.sum().backward()
    # d loss / d pc = -beta * sigmoid(-beta h) = -0.5 / (1 + e)
    torch.testing.assert_close(pc.grad, torch.tensor([-0.5 / (1 + math.e)]), **TOL)
    torch.testing.assert_close(pr.grad, torch.tensor([0.5 / (1 + math.e)]), **TOL)


def test_ipo() -> None:
    pc, pr, rc, rr = inputs(2)
    beta = 0.25
    losses, cr, rj = ipo_loss(pc, pr, rc, rr, beta=beta)
    ref = [((a - b) - (c - d) - 1 / (2 * beta)) ** 2
           for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist())]
    torch.testing.assert_close(losses, t(ref), **TOL)
    torch.testing.assert_close(cr, beta * (pc - rc), **TOL)
    # hand value: h = 2, beta = 0.25 -> (2 - 2)^2 = 0; h = 0 -> 4
    hand = ipo_loss(t([-1.0, -1.0]), t([-3.0, -1.0]), t([0.0, 0.0]), t([0.0, 0.0]), beta=0.25)[0]
    torch.testing.assert_close(hand, t([0.0, 4.0]), **TOL)


def test_hinge() -> None:
    pc, pr, rc, rr = inputs(3)
    beta = 0.1
    losses, _, rj = hinge_loss(pc, pr, rc, rr, beta=beta)
    ref = [max(0.0, 1 - beta * ((a - b) - (c - d)))
           for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist())]
    torch.testing.assert_close(losses, t(ref), **TOL)
    torch.testing.assert_close(rj, beta * (pr - rr), **TOL)
    # hand: beta h = 2 -> 0 ; beta h = 0.5 -> 0.5 ; beta h = -1 -> 2
    hand = hinge_loss(t([0.0, 0.0, 0.0]), t([-20.0, -5.0, 10.0]), t([0.0] * 3), t([0.0] * 3))[0]
    torch.testing.assert_close(hand, t([0.0, 0.5, 2.0]), **TOL)


def test_simpo() -> None:
    gen = torch.Generator().manual_seed(4)
    pc = -torch.rand(5, generator=gen, dtype=torch.float64) * 3
    pr = -torch.rand(5, generator=gen, dtype=torch.float64) * 3
    beta, ratio = 2.5, 0.4
    losses, cr, rj = simpo_loss(pc, pr, beta=beta, gamma_beta_ratio=ratio)
    gamma = ratio * beta
    ref = [-logsigmoid(beta * (a - b) - gamma) for a, b in zip(pc.tolist(), pr.tolist())]
    torch.testing.assert_close(losses, t(ref), **TOL)
    torch.testing.assert_close(cr, beta * pc, **TOL)
    torch.testing.assert_close(rj, beta * pr, **TOL)
    # defaults beta = 2, ratio = 0.5 -> gamma = 1; pc = pr -> -log sigmoid(-1) = log(1 + e)
    torch.testing.assert_close(simpo_loss(t([-1.0]), t([-1.0]))[0], t([math.log1p(math.e)]),
                               **TOL)


def ref_log_odds(a: float, b: float) -> float:
    return (a - b) - (math.log(1 - math.exp(a)) - math.log(1 - math.exp(b)))


def test_orpo() -> None:
    gen = torch.Generator().manual_seed(5)
    pc = -torch.rand(6, generator=gen, dtype=torch.float64) * 2 - 0.01
    pr = -torch.rand(6, generator=gen, dtype=torch.float64) * 2 - 0.01
    beta = 0.2
    losses, cr, rj, log_odds = orpo_loss(pc, pr, beta=beta)
    lo = [ref_log_odds(a, b) for a, b in zip(pc.tolist(), pr.tolist())]
    torch.testing.assert_close(log_odds, t(lo), **TOL)
    torch.testing.assert_close(losses, t([-beta * logsigmoid(x) for x in lo]), **TOL)
    torch.testing.assert_close(cr, beta * pc, **TOL)
    torch.testing.assert_close(rj, beta * pr, **TOL)


def test_orpo_hand_value() -> None:
    # p_c = 0.5, p_r = 0.25: odds 1 and 1/3 -> log_odds = log 3; loss = -beta log sigmoid(log 3)
    # = -beta log(3/4)
    losses, _, _, log_odds = orpo_loss(t([math.log(0.5)]), t([math.log(0.25)]), beta=0.1)
    torch.testing.assert_close(log_odds, t([math.log(3.0)]), **TOL)
    torch.testing.assert_close(losses, t([-0.1 * math.log(0.75)]), **TOL)


def test_orpo_stable_near_zero_and_very_negative() -> None:
    pc = torch.tensor([-1e-6, -30.0], requires_grad=True)
    pr = torch.tensor([-40.0, -1e-5], requires_grad=True)
    losses, _, _, log_odds = orpo_loss(pc, pr)
    # float64 reference with expm1 (exact at both ends)
    ref = [(a - b) - (math.log(-math.expm1(a)) - math.log(-math.expm1(b)))
           for a, b in [(-1e-6, -40.0), (-30.0, -1e-5)]]
    torch.testing.assert_close(log_odds.double(), t(ref), rtol=1e-5, atol=1e-4)
    losses.sum().backward()
    assert torch.isfinite(pc.grad).all() and torch.isfinite(pr.grad).all()
