"""RL pieces: KL penalties, GAE, PPO clipped losses and GRPO group advantages."""

from __future__ import annotations

import torch

from ._utils import compute_dtype, masked_mean

KL_KINDS = ("k1", "k2", "k3")


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate policy loss (Schulman et al. 2017, arXiv:1707.06347).

    ratio = exp(logprobs - old_logprobs);
    loss = masked_mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))
    (the negated clipped objective, so it is minimised). old_logprobs and advantages are
    treated as constants (detached). clip_fraction = masked_mean(-A * clip(ratio) > -A * ratio),
    the fraction of tokens where the clipped term is the one chosen, i.e. its gradient is
    zero (TRL's pg_clipfrac), detached. Returns (loss scalar, clip_fraction scalar).
    """
    old_logprobs = old_logprobs.detach()
    advantages = advantages.detach()
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).to(loss.dtype), mask).detach()
    return loss, clip_fraction


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> torch.Tensor:
    """Clipped value-function loss of PPO (as in OpenAI baselines / TRL PPOTrainer).

    v_clip = clip(values, old_values - eps, old_values + eps);
    loss = 0.5 * masked_mean(max((values - returns)^2, (v_clip - returns)^2)).
    old_values and returns are treated as constants (detached).
    """
    old_values = old_values.detach()
    returns = returns.detach()
    v_clip = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    losses = torch.maximum((values - returns) ** 2, (v_clip - returns) ** 2)
    return 0.5 * masked_mean(losses, mask)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO group-relative advantages (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300).

    rewards [N] hold N / group_size consecutive groups of group_size completions of one prompt.
    A_i = (r_i - mean_g) / (std_g + eps), mean and std over the group; std is the unbiased
    (Bessel-corrected, n - 1) sample std, torch.std's default, as in TRL's GRPOTrainer.
    Returns [N] in at least float32. ValueError when N is not divisible by group_size or
    group_size < 2 (the unbiased std of one sample is undefined).
    """
    if rewards.dim() != 1:
        raise ValueError(f"group_advantages expects rewards [N]; got shape {tuple(rewards.shape)}")
    if group_size < 2:
        raise ValueError(f"group_advantages: group_size must be >= 2, got {group_size}")
    n = rewards.shape[0]
    if n % group_size != 0:
        raise ValueError(
            f"group_advantages: {n} rewards are not divisible into groups of {group_size}"
        )
    grouped = rewards.to(compute_dtype(rewards.dtype)).view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + eps)).reshape(-1)
