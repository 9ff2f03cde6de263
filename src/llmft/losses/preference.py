"""Pairwise preference losses on per-sequence log-probabilities (all inputs [B]).

pc/pr = policy log-probs of the chosen/rejected responses, rc/rr = reference log-probs;
h = (pc - pr) - (rc - rr). Every function returns per-example losses [B] (the method reduces
them) and detached implicit rewards [B] for logging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _logratio_margin(
    pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor
) -> torch.Tensor:
    """h = (pc - pr) - (rc - rr): policy margin minus reference margin."""
    return (pc - pr) - (rc - rr)


def _dpo_rewards(
    pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Implicit DPO rewards beta * (pc - rc) and beta * (pr - rr), detached."""
    return (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach()


def dpo_loss(
    pc: torch.Tensor,
    pr: torch.Tensor,
    rc: torch.Tensor,
    rr: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> Triple:
    """Direct Preference Optimization loss (Rafailov et al. 2023, arXiv:2305.18290).

    losses = -(1 - ls) * logsigmoid(beta * h) - ls * logsigmoid(-beta * h), with
    h = (pc - pr) - (rc - rr) and ls = label_smoothing (conservative DPO / cDPO, Mitchell 2023:
    the preference label is assumed flipped with probability ls). ls = 0 is plain DPO.
    Returns (losses, chosen_rewards = beta * (pc - rc), rejected_rewards = beta * (pr - rr)).
    """
    logits = beta * _logratio_margin(pc, pr, rc, rr)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(
        -logits
    )
    return (losses, *_dpo_rewards(pc, pr, rc, rr, beta))


def ipo_loss(
    pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, beta: float = 0.1
) -> Triple:
    """Identity Preference Optimization loss (Azar et al. 2023, arXiv:2310.12036).

    losses = (h - 1 / (2 * beta))^2 with h = (pc - pr) - (rc - rr) (beta is the paper's tau).
    Returns (losses, beta * (pc - rc), beta * (pr - rr)).
    """
    h = _logratio_margin(pc, pr, rc, rr)
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    return (losses, *_dpo_rewards(pc, pr, rc, rr, beta))


def hinge_loss(
    pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, beta: float = 0.1
) -> Triple:
    """Hinge (SLiC-style) preference loss (Zhao et al. 2023, SLiC-HF, arXiv:2305.10425).

    losses = relu(1 - beta * h) with h = (pc - pr) - (rc - rr).
    Returns (losses, beta * (pc - rc), beta * (pr - rr)).
    """
    h = _logratio_margin(pc, pr, rc, rr)
    losses = torch.relu(1.0 - beta * h)
    return (losses, *_dpo_rewards(pc, pr, rc, rr, beta))


def simpo_loss(
    pc: torch.Tensor, pr: torch.Tensor, beta: float = 2.0, gamma_beta_ratio: float = 0.5
) -> Triple:
    """SimPO: reference-free, length-normalised preference loss.

    Meng et al. 2024, arXiv:2405.14734.

    pc/pr are length-averaged log-probs (sequence_logps(..., average=True)).
    losses = -logsigmoid(beta * (pc - pr) - gamma) with margin gamma = gamma_beta_ratio * beta.
    Returns (losses, beta * pc, beta * pr) (rewards detached).
    """
    gamma = gamma_beta_ratio * beta
    losses = -F.logsigmoid(beta * (pc - pr) - gamma)
    return losses, (beta * pc).detach(), (beta * pr).detach()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends (Maechler 2012):
    log(-expm1(x)) when x > -log 2, log1p(-exp(x)) otherwise."""
    threshold = -0.6931471805599453
    return torch.where(
        x > threshold,
        torch.log(-torch.expm1(x.clamp(min=threshold))),
        torch.log1p(-torch.exp(x.clamp(max=threshold))),
    )


def orpo_loss(
    pc: torch.Tensor, pr: torch.Tensor, beta: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Odds-ratio preference term of ORPO (Hong et al. 2024, arXiv:2403.07691).

    pc/pr are length-averaged log-probs (< 0; 0 gives infinite odds). odds(y) = p / (1 - p), so
    log_odds = log odds(chosen) - log odds(rejected)
             = (pc - pr) - (log(1 - exp(pc)) - log(1 - exp(pr))),
    losses = -beta * logsigmoid(log_odds) (beta is the paper's lambda).
    This is only the odds-ratio term: ORPO's total loss is the chosen responses' SFT NLL plus
    this term, and the method adds the NLL. Returns (losses, beta * pc, beta * pr, log_odds),
    rewards and log_odds detached (for logging).
    """
    log_odds = (pc - pr) - (_log1mexp(pc) - _log1mexp(pr))
    losses = -beta * F.logsigmoid(log_odds)
    return losses, (beta * pc).detach(), (beta * pr).detach(), log_odds.detach()
