"""Every public layout's conf/data entry trains 2 steps offline from its fixture folder (tests/fixtures/hub),
read through the same `datasets` code path as the Hub dataset, with the method it suits."""
from __future__ import annotations

import csv
import json
import math

import pytest

from llmft.data.tasks import verify
from llmft.train import run
from tests.conftest import ROOT
from tests.integration.observe import logged

HUB = ROOT / "tests" / "fixtures" / "hub"
FAST = ("model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=2", "data.batch_size=4", "optim.lr=1e-2")
# one online iteration: 4 responses (2 prompts x 2) of at most 8 tokens, scored by the gsm8k verifier
GRPO = ("method.rollout_size=4", "method.group_size=2", "method.micro_batch_size=2",
        "method.sampling.max_new_tokens=8", "reward=verifier")

CASES = {  # layout: (method, extra overrides, training rows after conversion, validation rows)
    "alpaca": ("sft", ("data.val_fraction=0.2",), 8, 2),  # its only split: 2 of its 10 rows held out
    "ultrachat": ("sft", (), 8, 3),
    "ultrafeedback": ("dpo", (), 8, 3),
    "hh_rlhf": ("reward", (), 8, 3),
    "kto_mix": ("kto", (), 9, 3),
    "gsm8k": ("grpo", GRPO, 8, 3),
}


@pytest.mark.parametrize("layout", list(CASES))
def test_each_public_layout_trains_two_steps_from_its_fixture(make_cfg, tmp_path, layout):
    method, extra, n_train, n_val = CASES[layout]
    cfg = make_cfg(*FAST, f"data={layout}", f"data.path={HUB / layout}", f"method={method}", *extra)
    result = run(cfg)
    card = json.loads((tmp_path / "data_card.json").read_text())
    assert card["examples"] == {"train": n_train, "val": n_val}, card["examples"]
    losses = [float(r["train/loss"]) for r in logged(tmp_path) if r.get("train/loss")]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert result["card"]["optimizer_steps"] == 2
    if method == "grpo":  # the gsm8k verifier scored the held-out responses against each row's final number
        with open(tmp_path / "samples.csv") as handle:
            samples = list(csv.DictReader(handle))
        assert samples and {s["task"] for s in samples} == {"gsm8k"}
        assert {s["answer"] for s in samples} <= {"168", "8", "60"}  # the test split's answers
        assert all(float(s["reward"]) == float(verify("gsm8k", s["response"], s["answer"])) for s in samples)


def test_gsm8k_also_serves_sft_through_its_worked_solutions(make_cfg, tmp_path):
    run(make_cfg(*FAST, "data=gsm8k", f"data.path={HUB / 'gsm8k'}", "method=sft"))
    assert len([r for r in logged(tmp_path) if r.get("train/loss")]) == 2


def test_a_data_config_that_cannot_feed_the_method_fails_at_start_up(make_cfg):
    cfg = make_cfg("model=tiny", "data=alpaca", f"data.path={HUB / 'alpaca'}", "method=dpo")
    with pytest.raises(ValueError, match=r"data=alpaca \(format alpaca\) cannot feed method=dpo: it needs a chosen "
                                         r"and a rejected answer per prompt"):
        run(cfg)
