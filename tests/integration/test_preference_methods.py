"""Every pairwise preference method x {full, lora, qlora} on the tiny model: what trains, what stays."""
from __future__ import annotations

import csv
import math

import pytest
import torch

from llmft.train import run

# 8 rows in windows of 4: the 2 steps are one whole epoch, so validation runs at its end
FAST = ("model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=2", "data.limit_train=8",
        "data.batch_size=4", "optim.lr=1e-2")
METHODS = ("dpo", "ipo", "hinge", "simpo", "orpo")
PAIR_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected")


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def logged(folder) -> list[dict]:
    with open(folder / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("peft", ["full", "lora", "qlora"])
@pytest.mark.parametrize("method", METHODS)
def test_preference_method_trains_the_trainable_and_nothing_else(make_cfg, tmp_path, method, peft):
    from hydra.utils import instantiate

    from llmft import models

    cfg = make_cfg(*FAST, f"method={method}", f"peft={peft}")
    before = snapshot(models.build(instantiate(cfg.model), instantiate(cfg.peft), instantiate(cfg.precision)).model)
    result = run(cfg)
    handle = result["handle"]
    after = snapshot(handle.model)
    trainable = {n for n, p in handle.model.named_parameters() if p.requires_grad}
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    assert changed == trainable, (changed ^ trainable)
    if handle.frozen_copy is not None:  # full fine-tuning with a reference: the copy never moves
        assert {n: torch.equal(p, before[n]) for n, p in snapshot(handle.frozen_copy).items()} == \
            {n: True for n in before}
    rows = logged(tmp_path)
    train = [r for r in rows if r.get("train/loss")]
    assert len(train) == 2 and all(math.isfinite(float(r["train/loss"])) for r in train)
    for name in PAIR_METRICS:
        assert train[0][f"train/{name}"] != "", name
        assert any(r.get(f"val/{name}") for r in rows), name
    assert all(r["train/grad_norm"] for r in train)
    if method == "orpo":
        assert train[0]["train/nll_loss"] and train[0]["train/log_odds_ratio"]


@pytest.mark.parametrize("peft", ["full", "lora"])
def test_dpo_first_loss_is_ln2_with_zero_rewards_when_policy_is_reference(make_cfg, tmp_path, peft):
    run(make_cfg(*FAST, "method=dpo", f"peft={peft}"))
    first = next(r for r in logged(tmp_path) if r.get("train/loss"))
    assert float(first["train/loss"]) == pytest.approx(math.log(2), abs=1e-6)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert float(first[f"train/{name}"]) == pytest.approx(0.0, abs=1e-6), name
    assert float(first["train/rewards/accuracies"]) == 0.0  # no margin yet: nothing counts as preferred
