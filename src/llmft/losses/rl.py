"""RL pieces: KL penalties, GAE, PPO clipped losses, GRPO group and RLOO leave-one-out advantages,
and the per-token / per-sequence aggregation of token losses (a (sum, count) pair, so a minibatch
split into micro-batches normalises once over the whole minibatch)."""

from __future__ import annotations

import torch

from ._utils import compute_dtype, masked_mean

KL_KINDS = ("k1", "k2", "k3")
REDUCTIONS = ("mean", "none")
AGGREGATIONS = ("token", "sequence")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: choose one of {list(REDUCTIONS)}")


def aggregate(values: torch.Tensor, mask: torch.Tensor, level: str = "token") -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, count) of per-token `values` [B, T] over `mask`, so that sum / count is the loss.

    level="token":    sum_{b,t} x*m, count = sum m      (every token weighs the same: DAPO, Dr. GRPO)
    level="sequence": sum_b mean_t(x | m), count = B    (every sequence weighs the same: GRPO paper)
    Summing the pairs of several micro-batches and dividing once gives the minibatch's loss. A row
    with an empty mask is an error under "sequence" (its mean is undefined).
    """
    if level not in AGGREGATIONS:
        raise ValueError(f"loss aggregation {level!r}: choose one of {list(AGGREGATIONS)}")
    mask = mask.to(values.dtype)
    if level == "token":
        return (values * mask).sum(), mask.sum()
    lengths = mask.sum(-1)
    if not bool((lengths > 0).all()):
        raise ValueError("per-sequence aggregation over a row with an empty mask")
    return ((values * mask).sum(-1) / lengths).sum(), torch.tensor(float(values.shape[0]), dtype=values.dtype)


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1"
) -> torch.Tensor:
    """Per-token estimators of KL(policy || reference) on tokens sampled from the policy.

    Schulman, "Approximating KL divergence" (2020, http://joschu.net/blog/kl-approx.html).
    With log-ratio d = logprobs - ref_logprobs = log pi(x) - log pi_ref(x):
      k1 = d                     (unbiased, high variance, can be negative)
      k2 = 0.5 * d^2             (biased, low variance, >= 0)
      k3 = exp(-d) - 1 + d       (unbiased, low variance, >= 0); i.e. with r = ref - logp,
                                  k3 = exp(r) - 1 - r.
    Elementwise, same shape as the inputs. Unknown kind -> ValueError.
    """
    if kind not in KL_KINDS:
        raise ValueError(f"kl_penalty: unknown kind {kind!r}; valid kinds are {list(KL_KINDS)}")
    d = logprobs - ref_logprobs
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d**2
    r = -d
    return torch.expm1(r) - r


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation (Schulman et al. 2016, arXiv:1506.02438).

    Over the valid positions (mask == 1) of each row, from last to first:
      delta_t = rewards_t + gamma * V_next - values_t,   A_t = delta_t + gamma * lam * A_next,
    where V_next / A_next are the value / advantage at the next valid position, and 0 after the
    last valid position (the episode ends there). Positions with mask 0 are skipped (gaps are
    bridged, so left or right padding both work). returns = advantages + values.
    Inputs [B, T]; outputs [B, T], zero where mask == 0, detached (they are targets), computed
    in at least float32.
    """
    dtype = compute_dtype(torch.promote_types(rewards.dtype, values.dtype))
    rewards = rewards.detach().to(dtype)
    values = values.detach().to(dtype)
    valid = mask.to(device=rewards.device, dtype=torch.bool)
    batch, length = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(batch, dtype=dtype, device=rewards.device)
    next_adv = torch.zeros(batch, dtype=dtype, device=rewards.device)
    for t in range(length - 1, -1, -1):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        m = valid[:, t]
        advantages[:, t] = torch.where(m, adv, torch.zeros_like(adv))
        next_adv = torch.where(m, adv, next_adv)
        next_value = torch.where(m, values[:, t], next_value)
    returns = (advantages + values).masked_fill(~valid, 0.0)
    return advantages, returns


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate policy loss (Schulman et al. 2017, arXiv:1707.06347).

    ratio = exp(logprobs - old_logprobs);
    loss = masked_mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))
    (the negated clipped objective, so it is minimised). old_logprobs and advantages are
    treated as constants (detached). clip_fraction = masked_mean(-A * clip(ratio) > -A * ratio),
    the fraction of tokens where the clipped term is the one chosen, i.e. its gradient is
    zero (TRL's pg_clipfrac), detached. Returns (loss scalar, clip_fraction scalar).
    reduction="none": (per-token losses [B, T], per-token clipped indicator [B, T]), zero where
    mask == 0, for `aggregate`.
    """
    _check_reduction(reduction)
    old_logprobs = old_logprobs.detach()
    advantages = advantages.detach()
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    if reduction == "none":
        keep = mask.to(ratio.dtype)
        return torch.maximum(unclipped, clipped) * keep, ((clipped > unclipped).to(ratio.dtype) * keep).detach()
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).to(loss.dtype), mask).detach()
    return loss, clip_fraction


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    reduction: str = "mean",
) -> torch.Tensor:
    """Clipped value-function loss of PPO (as in OpenAI baselines / TRL PPOTrainer).

    v_clip = clip(values, old_values - eps, old_values + eps);
    loss = 0.5 * masked_mean(max((values - returns)^2, (v_clip - returns)^2)).
    old_values and returns are treated as constants (detached). reduction="none": the per-token
    0.5 * max(...) [B, T], zero where mask == 0.
    """
    _check_reduction(reduction)
    old_values = old_values.detach()
    returns = returns.detach()
    v_clip = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    losses = torch.maximum((values - returns) ** 2, (v_clip - returns) ** 2)
    if reduction == "none":
        return 0.5 * losses * mask.to(losses.dtype)
    return 0.5 * masked_mean(losses, mask)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6, scale: bool = True) -> torch.Tensor:
    """GRPO group-relative advantages (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300).

    rewards [N] hold N / group_size consecutive groups of group_size completions of one prompt.
    A_i = (r_i - mean_g) / (std_g + eps), mean and std over the group; std is the unbiased
    (Bessel-corrected, n - 1) sample std, torch.std's default, as in TRL's GRPOTrainer.
    Returns [N] in at least float32. ValueError when N is not divisible by group_size or
    group_size < 2 (the unbiased std of one sample is undefined). scale=False: r_i - mean_g only
    (Dr. GRPO, arXiv:2503.20783: dividing by the std up-weights prompts that are nearly solved).
    """
    grouped = _grouped(rewards, group_size, "group_advantages")
    mean = grouped.mean(dim=1, keepdim=True)
    if not scale:
        return (grouped - mean).reshape(-1)
    std = grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + eps)).reshape(-1)


def _grouped(rewards: torch.Tensor, group_size: int, name: str) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"{name} expects rewards [N]; got shape {tuple(rewards.shape)}")
    if group_size < 2:
        raise ValueError(f"{name}: group_size must be >= 2, got {group_size}")
    if rewards.shape[0] % group_size != 0:
        raise ValueError(f"{name}: {rewards.shape[0]} rewards are not divisible into groups of {group_size}")
    return rewards.to(compute_dtype(rewards.dtype)).view(-1, group_size)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO advantages (Kool et al. 2019; Ahmadian et al. 2024, arXiv:2402.14740): each completion's
    reward minus the mean reward of the other group_size - 1 completions of its prompt,
      A_i = r_i - (sum_g r - r_i) / (k - 1) = k / (k - 1) * (r_i - mean_g).
    rewards [N] hold consecutive groups of group_size; returns [N] in at least float32."""
    grouped = _grouped(rewards, group_size, "rloo_advantages")
    others = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).reshape(-1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked positions (PPO's advantage whitening; TRL's
    `masked_whiten`, biased variance); zero where mask == 0. shift_mean=False keeps the mean."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)
