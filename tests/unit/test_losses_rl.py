"""kl_penalty, gae, PPO losses and GRPO group advantages against float64 references."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from llmft.losses import (aggregate, gae, group_advantages, kl_penalty, masked_whiten, ppo_policy_loss, ppo_value_loss,
                          rloo_advantages)

TOL = {"rtol": 1e-6, "atol": 1e-6}


def t(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


# ---------------------------------------------------------------- kl_penalty

def test_kl_kinds() -> None:
    gen = torch.Generator().manual_seed(21)
    logp = -torch.rand(3, 5, generator=gen, dtype=torch.float64) * 4
    ref = -torch.rand(3, 5, generator=gen, dtype=torch.float64) * 4
    pairs = list(zip(logp.flatten().tolist(), ref.flatten().tolist()))
    k1 = [a - b for a, b in pairs]
    k2 = [0.5 * (a - b) ** 2 for a, b in pairs]
    k3 = [math.exp(b - a) - 1 - (b - a) for a, b in pairs]  # r = ref - logp: e^r - 1 - r
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), t(k1).view(3, 5), **TOL)
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), t(k2).view(3, 5), **TOL)
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), t(k3).view(3, 5), **TOL)
    torch.testing.assert_close(kl_penalty(logp, ref), t(k1).view(3, 5), **TOL)  # default k1
    assert torch.all(kl_penalty(logp, ref, "k3") >= 0)


def test_kl_hand_values() -> None:
    # logp = -1, ref = -2: d = 1 -> k1 = 1, k2 = 0.5, k3 = e^-1 - 1 + 1 = e^-1
    logp, ref = t([-1.0]), t([-2.0])
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), t([1.0]), **TOL)
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), t([0.5]), **TOL)
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), t([math.exp(-1.0)]), **TOL)


def test_kl_unknown_kind() -> None:
    with pytest.raises(ValueError, match="k1.*k2.*k3"):
        kl_penalty(t([0.0]), t([0.0]), "k4")


# ---------------------------------------------------------------- gae

def test_gae_hand_worked() -> None:
    # gamma = 1, lam = 0.5, rewards [0, 0, 1], values [0.5, 0.6, 0.7]:
    #   t=2: delta = 1 + 0   - 0.7 = 0.3 ; A2 = 0.3
    #   t=1: delta = 0 + 0.7 - 0.6 = 0.1 ; A1 = 0.1 + 0.5 * 0.3  = 0.25
    #   t=0: delta = 0 + 0.6 - 0.5 = 0.1 ; A0 = 0.1 + 0.5 * 0.25 = 0.225
    #   returns = A + V = [0.725, 0.85, 1.0]
    # row 2: gamma = 1 as well but a padded 4th step whose reward 9 / value 5 must be ignored.
    rewards = t([[0.0, 0.0, 1.0, 9.0], [0.0, 0.0, 1.0, 9.0]])
    values = t([[0.5, 0.6, 0.7, 5.0], [0.5, 0.6, 0.7, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, t([[0.225, 0.25, 0.3, 0.0]] * 2), **TOL)
    torch.testing.assert_close(ret, t([[0.725, 0.85, 1.0, 0.0]] * 2), **TOL)


def test_gae_hand_worked_discounted_left_padded() -> None:
    # gamma = 0.9, lam = 0.5 (gamma*lam = 0.45), rewards [1, 0, 2], values [1, 1, 1]:
    #   t=2: delta = 2 + 0         - 1 = 1    ; A2 = 1
    #   t=1: delta = 0 + 0.9 * 1   - 1 = -0.1 ; A1 = -0.1 + 0.45 * 1    = 0.35
    #   t=0: delta = 1 + 0.9 * 1   - 1 = 0.9  ; A0 = 0.9  + 0.45 * 0.35 = 1.0575
    #   returns = [2.0575, 1.35, 2.0]
    # the same episode left-padded by one position (mask 0 there) gives the same numbers.
    rewards = t([[1.0, 0.0, 2.0, 0.0], [7.0, 1.0, 0.0, 2.0]])
    values = t([[1.0, 1.0, 1.0, 3.0], [4.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, True, False], [False, True, True, True]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    torch.testing.assert_close(adv, t([[1.0575, 0.35, 1.0, 0.0], [0.0, 1.0575, 0.35, 1.0]]), **TOL)
    torch.testing.assert_close(ret, t([[2.0575, 1.35, 2.0, 0.0], [0.0, 2.0575, 1.35, 2.0]]), **TOL)


def ref_gae(rewards, values, lengths, gamma, lam):
    """Textbook recursion on each row's first `length` steps, in Python floats."""
    adv_rows, ret_rows = [], []
    for r, v, n in zip(rewards, values, lengths):
        adv = [0.0] * len(r)
        last = 0.0
        for i in reversed(range(n)):
            nv = v[i + 1] if i + 1 < n else 0.0
            last = r[i] + gamma * nv - v[i] + gamma * lam * last
            adv[i] = last
        adv_rows.append(adv)
        ret_rows.append([a + (v[i] if i < n else 0.0) for i, a in enumerate(adv)])
    return adv_rows, ret_rows


def test_gae_random_against_reference() -> None:
    gen = torch.Generator().manual_seed(22)
    rewards = torch.randn(4, 8, generator=gen)
    values = torch.randn(4, 8, generator=gen)
    lengths = [8, 5, 1, 3]
    mask = torch.tensor([[1] * n + [0] * (8 - n) for n in lengths], dtype=torch.float32)
    adv, ret = gae(rewards, values, mask, gamma=0.97, lam=0.9)
    ref_adv, ref_ret = ref_gae(rewards.double().tolist(), values.double().tolist(), lengths,
                               0.97, 0.9)
    assert adv.dtype == torch.float32
    torch.testing.assert_close(adv.double(), t(ref_adv), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ret.double(), t(ref_ret), rtol=1e-5, atol=1e-5)


def test_gae_outputs_detached() -> None:
    values = torch.zeros(1, 3, requires_grad=True)
    adv, ret = gae(torch.ones(1, 3), values, torch.ones(1, 3))
    assert not adv.requires_grad and not ret.requires_grad


# ---------------------------------------------------------------- ppo

def test_ppo_policy_clipping_cases() -> None:
    # eps = 0.2. per token: max(-A r, -A clip(r, 0.8, 1.2))
    #   A=+1 r=1.5 : max(-1.5, -1.2) = -1.2   clipped chosen
    #   A=+1 r=0.5 : max(-0.5, -0.8) = -0.5   unclipped
    #   A=-1 r=1.5 : max( 1.5,  1.2) =  1.5   unclipped
    #   A=-1 r=0.5 : max( 0.5,  0.8) =  0.8   clipped chosen
    #   A=+2 r=1.1 : inside the range -> -2.2
    #   masked token (A=+5 r=3) ignored
    # mean = (-1.2 - 0.5 + 1.5 + 0.8 - 2.2) / 5 = -0.32 ; clip fraction = 2 / 5
    ratios = t([1.5, 0.5, 1.5, 0.5, 1.1, 3.0])
    adv = t([1.0, 1.0, -1.0, -1.0, 2.0, 5.0])
    mask = t([1, 1, 1, 1, 1, 0])
    old = t([-1.0, -2.0, -0.5, -3.0, -1.5, -0.7])
    logp = (old + torch.log(ratios)).requires_grad_(True)
    loss, clip_frac = ppo_policy_loss(logp.view(1, -1), old.view(1, -1), adv.view(1, -1),
                                      mask.view(1, -1), clip_eps=0.2)
    torch.testing.assert_close(loss, t(-0.32), **TOL)
    torch.testing.assert_close(clip_frac, t(0.4), **TOL)
    assert not clip_frac.requires_grad
    loss.backward()
    # d/dlogp of -A r / 5 = -A r / 5 where unclipped, 0 where clipped or masked
    expected_grad = t([0.0, -0.5 / 5, 1.5 / 5, 0.0, -2.2 / 5, 0.0])
    torch.testing.assert_close(logp.grad, expected_grad, **TOL)


def test_ppo_policy_random_against_reference() -> None:
    gen = torch.Generator().manual_seed(23)
    logp = -torch.rand(3, 6, generator=gen, dtype=torch.float64) * 3
    old = logp + torch.randn(3, 6, generator=gen, dtype=torch.float64) * 0.3
    adv = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    mask = (torch.rand(3, 6, generator=gen) > 0.3).double()
    eps = 0.1
    terms, clipped = [], []
    for lp, o, a, m in zip(logp.flatten().tolist(), old.flatten().tolist(),
                           adv.flatten().tolist(), mask.flatten().tolist()):
        if not m:
            continue
        r = math.exp(lp - o)
        u, c = -a * r, -a * min(max(r, 1 - eps), 1 + eps)
        terms.append(max(u, c))
        clipped.append(1.0 if c > u else 0.0)
    loss, frac = ppo_policy_loss(logp, old, adv, mask, clip_eps=eps)
    torch.testing.assert_close(loss, t(sum(terms) / len(terms)), **TOL)
    torch.testing.assert_close(frac, t(sum(clipped) / len(clipped)), **TOL)


def test_ppo_empty_mask_raises() -> None:
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="empty mask"):
        ppo_policy_loss(z, z, z, z)


def test_ppo_value_loss() -> None:
    # eps = 0.2, per token 0.5 * max((v - R)^2, (clip(v, old +- 0.2) - R)^2):
    #   v=1.0 old=0.5 R=1.0 : v_clip=0.7 -> max(0, 0.09)    = 0.09
    #   v=0.0 old=0.5 R=1.0 : v_clip=0.3 -> max(1, 0.49)    = 1.0
    #   v=0.6 old=0.5 R=0.0 : v_clip=0.6 (inside) -> 0.36
    #   masked token ignored
    # loss = 0.5 * (0.09 + 1.0 + 0.36) / 3 = 0.241666...
    values = t([[1.0, 0.0, 0.6, 9.0]])
    old = t([[0.5, 0.5, 0.5, 0.0]])
    returns = t([[1.0, 1.0, 0.0, 0.0]])
    mask = t([[1, 1, 1, 0]])
    loss = ppo_value_loss(values, old, returns, mask, clip_eps=0.2)
    torch.testing.assert_close(loss, t(0.5 * (0.09 + 1.0 + 0.36) / 3), **TOL)


def test_ppo_value_loss_random_against_reference() -> None:
    gen = torch.Generator().manual_seed(24)
    v = torch.randn(2, 7, generator=gen, dtype=torch.float64)
    old = v + torch.randn(2, 7, generator=gen, dtype=torch.float64) * 0.3
    ret = torch.randn(2, 7, generator=gen, dtype=torch.float64)
    mask = (torch.rand(2, 7, generator=gen) > 0.2).double()
    eps = 0.15
    terms = []
    for a, o, r, m in zip(v.flatten().tolist(), old.flatten().tolist(), ret.flatten().tolist(),
                          mask.flatten().tolist()):
        if m:
            vc = min(max(a, o - eps), o + eps)
            terms.append(max((a - r) ** 2, (vc - r) ** 2))
    loss = ppo_value_loss(v, old, ret, mask, clip_eps=eps)
    torch.testing.assert_close(loss, t(0.5 * sum(terms) / len(terms)), **TOL)


# ---------------------------------------------------------------- group_advantages

def test_group_advantages_values() -> None:
    gen = torch.Generator().manual_seed(25)
    rewards = torch.randn(12, generator=gen, dtype=torch.float64)
    adv = group_advantages(rewards, group_size=4, eps=1e-6)
    expected = []
    values = rewards.tolist()
    for g in range(3):
        grp = values[4 * g: 4 * g + 4]
        mu, sd = statistics.fmean(grp), statistics.stdev(grp)  # unbiased (n - 1)
        expected += [(x - mu) / (sd + 1e-6) for x in grp]
    torch.testing.assert_close(adv, t(expected), rtol=1e-9, atol=1e-9)


def test_group_advantages_hand_and_constant_group() -> None:
    # group [0, 1, 0, 1]: mean 0.5, unbiased std = sqrt(1/3) -> +-0.5 * sqrt(3) = +-0.8660254
    # group [1, 1, 1, 1]: std 0 -> all 0 (eps avoids the division by zero)
    adv = group_advantages(torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]), 4)
    h = 0.5 * math.sqrt(3)
    assert adv.dtype == torch.float32
    torch.testing.assert_close(adv, torch.tensor([-h, h, -h, h, 0.0, 0.0, 0.0, 0.0]),
                               rtol=1e-5, atol=1e-5)


def test_group_advantages_not_divisible() -> None:
    with pytest.raises(ValueError, match="divisible"):
        group_advantages(torch.zeros(10), 4)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(4), 1)


# ---------------------------------------------------------------- rloo, aggregation, whitening

def test_rloo_leave_one_out_by_hand() -> None:
    # group [1, 0, 0, 1]: A_0 = 1 - (0 + 0 + 1) / 3 = 2/3, A_1 = 0 - 2/3 = -2/3; group [3, 1]: A = [2, -2]
    got = rloo_advantages(t([1.0, 0.0, 0.0, 1.0]), 4)
    torch.testing.assert_close(got, t([2 / 3, -2 / 3, -2 / 3, 2 / 3]), **TOL)
    torch.testing.assert_close(rloo_advantages(t([3.0, 1.0]), 2), t([2.0, -2.0]), **TOL)
    gen = torch.Generator().manual_seed(3)
    r = torch.rand(12, generator=gen, dtype=torch.float64)
    expected = [r[i].item() - statistics.mean(r[(i // 3) * 3 + j].item() for j in range(3) if (i // 3) * 3 + j != i)
                for i in range(12)]
    torch.testing.assert_close(rloo_advantages(r, 3), t(expected), **TOL)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        rloo_advantages(t([1.0, 2.0]), 1)
    with pytest.raises(ValueError, match="not divisible"):
        rloo_advantages(t([1.0, 2.0, 3.0]), 2)


def test_group_advantages_unscaled() -> None:
    torch.testing.assert_close(group_advantages(t([1.0, 0.0, 0.0, 1.0]), 2, scale=False), t([0.5, -0.5, -0.5, 0.5]),
                               **TOL)


def test_aggregate_token_and_sequence() -> None:
    x = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = t([[1, 1, 0], [1, 0, 0]])
    total, count = aggregate(x, m, "token")
    assert total.item() == pytest.approx(1 + 2 + 4) and count.item() == 3
    total, count = aggregate(x, m, "sequence")
    assert total.item() == pytest.approx(1.5 + 4.0) and count.item() == 2
    # micro-batches summed then divided once equal the whole minibatch's mean
    for level in ("token", "sequence"):
        whole = aggregate(x, m, level)
        parts = [aggregate(x[i : i + 1], m[i : i + 1], level) for i in range(2)]
        assert (sum(p[0] for p in parts) / sum(p[1] for p in parts)).item() == pytest.approx((whole[0] / whole[1]).item())
    with pytest.raises(ValueError, match="token.*sequence"):
        aggregate(x, m, "batch")
    with pytest.raises(ValueError, match="empty mask"):
        aggregate(x, t([[1, 0, 0], [0, 0, 0]]), "sequence")


def test_reduction_none_matches_mean() -> None:
    gen = torch.Generator().manual_seed(8)
    logp, old = (-torch.rand(3, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    adv = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    per_token, clipped = ppo_policy_loss(logp, old, adv, mask, 0.1, reduction="none")
    loss, fraction = ppo_policy_loss(logp, old, adv, mask, 0.1)
    assert (per_token[mask == 0] == 0).all() and (clipped[mask == 0] == 0).all()
    torch.testing.assert_close(per_token.sum() / mask.sum(), loss, **TOL)
    torch.testing.assert_close(clipped.sum() / mask.sum(), fraction, **TOL)
    values, old_values, returns = (torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    per_token = ppo_value_loss(values, old_values, returns, mask, 0.2, reduction="none")
    torch.testing.assert_close(per_token.sum() / mask.sum(), ppo_value_loss(values, old_values, returns, mask, 0.2),
                               **TOL)
    with pytest.raises(ValueError, match="reduction"):
        ppo_value_loss(values, old_values, returns, mask, reduction="sum")


def test_masked_whiten() -> None:
    x = t([[1.0, 2.0, 100.0], [3.0, 0.0, 0.0]])
    m = t([[1, 1, 0], [1, 0, 0]])
    w = masked_whiten(x, m)
    kept = [1.0, 2.0, 3.0]
    mean, var = statistics.mean(kept), statistics.pvariance(kept)
    torch.testing.assert_close(w, t([[(1 - mean) / math.sqrt(var + 1e-8), (2 - mean) / math.sqrt(var + 1e-8), 0.0],
                                     [(3 - mean) / math.sqrt(var + 1e-8), 0.0, 0.0]]), **TOL)
    torch.testing.assert_close(masked_whiten(x, m, shift_mean=False)[m.bool()], w[m.bool()] + mean, **TOL)
