"""Every pairwise preference method x {full, lora, qlora} on the tiny model: what trains, what stays."""
from __future__ import annotations

import math

import pytest
import torch

from llmft.train import run
from tests.integration.observe import logged, run_checking_what_trains, snapshot

# 8 rows in windows of 4: the 2 steps are one whole epoch, so validation runs at its end
FAST = ("model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=2", "data.limit_train=8",
        "data.batch_size=4", "optim.lr=1e-2")
PAIR_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected")
# TRL's names for each method's logged metrics (under train/ and val/)
METRICS = {
    "dpo": PAIR_METRICS, "ipo": PAIR_METRICS, "hinge": PAIR_METRICS, "simpo": PAIR_METRICS,
    "orpo": (*PAIR_METRICS, "nll_loss", "log_odds_ratio", "log_odds_chosen"),
    "kto": ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "kl"),
    "reward": ("accuracy", "rewards/chosen", "rewards/rejected", "rewards/margins"),
}


@pytest.mark.parametrize("peft", ["full", "lora", "qlora"])
@pytest.mark.parametrize("method", list(METRICS))
def test_preference_method_trains_the_trainable_and_nothing_else(make_cfg, tmp_path, method, peft):
    result, head_before = run_checking_what_trains(make_cfg(*FAST, f"method={method}", f"peft={peft}"))
    handle = result["handle"]
    if handle.head is not None:  # the reward model's score head trains too, and is saved
        assert head_before and all(not torch.equal(p, head_before[n]) for n, p in snapshot(handle.head).items())
        saved = tmp_path / "checkpoints" / ("model" if peft == "full" else "adapter") / "score_head.safetensors"
        assert saved.is_file()
    rows = logged(tmp_path)
    train = [r for r in rows if r.get("train/loss")]
    assert len(train) == 2 and all(math.isfinite(float(r["train/loss"])) for r in train)
    for name in METRICS[method]:
        assert train[0][f"train/{name}"] != "", name
        assert any(r.get(f"val/{name}") for r in rows), name
    assert all(r["train/grad_norm"] for r in train)


@pytest.mark.parametrize("peft", ["full", "lora"])
def test_dpo_first_loss_is_ln2_with_zero_rewards_when_policy_is_reference(make_cfg, tmp_path, peft):
    run(make_cfg(*FAST, "method=dpo", f"peft={peft}"))
    first = next(r for r in logged(tmp_path) if r.get("train/loss"))
    assert float(first["train/loss"]) == pytest.approx(math.log(2), abs=1e-6)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert float(first[f"train/{name}"]) == pytest.approx(0.0, abs=1e-6), name
    assert float(first["train/rewards/accuracies"]) == 0.0  # no margin yet: nothing counts as preferred


@pytest.mark.parametrize("method", ["dpo", "reward"])
def test_pairwise_accuracy_on_held_out_pairs_is_reported_and_logged(make_cfg, tmp_path, method):
    import json

    from llmft.data.tasks import TASK_NAMES

    run(make_cfg("model=tiny", "precision=fp32", "trainer.max_steps=1", "data.limit_train=4", "data.batch_size=4",
                 f"method={method}", "evaluation.limit=2", "evaluation.max_new_tokens=2"))
    report = json.loads((tmp_path / "eval.json").read_text())
    accuracy = report["tuned"]["pairwise_accuracy"]
    assert set(accuracy) == {"overall", *TASK_NAMES} and all(0 <= v <= 1 for v in accuracy.values())
    # the reward model is scored on pairs instead of generations; DPO on both (its implicit reward)
    assert ("exact_match" in report["tuned"]) is (method == "dpo")
    assert ("base" in report) is (method == "dpo")  # a reward model's untrained head is not scored (as eval.py)
    header = set(logged(tmp_path)[0])
    assert "eval/tuned/pairwise_accuracy/overall" in header
    assert ("eval/base/exact_match/overall" in header) is (method == "dpo")


@pytest.mark.parametrize("method", ["dpo", "reward"])
def test_eval_py_scores_a_run_the_way_its_method_needs(make_cfg, tmp_path, method):
    """eval.py run_dir=: the reward model's saved head scores pairs; DPO adds its implicit reward."""
    import json

    from omegaconf import OmegaConf

    from llmft import evaluate

    cfg = make_cfg("model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=1", "data.limit_train=4",
                   "data.batch_size=4", f"method={method}")
    cfg.paths.output_dir = str(tmp_path / "run")
    run(cfg)
    (tmp_path / "run" / ".hydra").mkdir()  # what Hydra writes for `python train.py`
    OmegaConf.save(cfg, tmp_path / "run" / ".hydra" / "config.yaml")
    eval_cfg = make_cfg(f"run_dir={tmp_path / 'run'}", "evaluation.limit=2", "evaluation.max_new_tokens=2", name="eval")
    eval_cfg.paths.output_dir = str(tmp_path / "eval")
    reports = evaluate.run(eval_cfg)
    assert reports == json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert 0 <= reports["tuned"]["pairwise_accuracy"]["overall"] <= 1
    assert set(reports) == ({"tuned"} if method == "reward" else {"base", "tuned"})
    assert ("exact_match" in reports["tuned"]) is (method == "dpo")
