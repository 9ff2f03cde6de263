"""method.precompute_ref=true: reference log-probs computed once, cached, and reused by a sweep."""
from __future__ import annotations

import csv
import logging
import math

import pytest

from llmft.models.handle import ModelHandle
from llmft.train import run

FAST = ("model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=2", "data.limit_train=8",
        "data.batch_size=4", "method=dpo", "method.precompute_ref=true")


def test_a_second_run_of_an_lr_sweep_does_no_reference_forward_pass(make_cfg, tmp_path, monkeypatch, caplog):
    reference_uses: list[str] = []
    original = ModelHandle.reference

    def counted(self):
        reference_uses.append("reference")
        return original(self)

    monkeypatch.setattr(ModelHandle, "reference", counted)
    cache = tmp_path / "reference-cache"
    for lr in ("1e-3", "2e-3"):
        cfg = make_cfg(*FAST, f"method.ref_cache={cache}", f"optim.lr={lr}")
        cfg.paths.output_dir = str(tmp_path / lr)
        reference_uses.clear()
        with caplog.at_level(logging.INFO, logger="llmft.reference_cache"):
            run(cfg)
        messages = [r.getMessage() for r in caplog.records if r.name == "llmft.reference_cache"]
        caplog.clear()
        if lr == "1e-3":
            assert reference_uses and any("cache miss" in m for m in messages)  # computed once, up front
        else:
            assert reference_uses == [] and any("cache hit" in m for m in messages)  # no reference forward at all
    assert len(list(cache.glob("*.pt"))) == 1
    # the cached values are the reference's: the first DPO loss is still ln 2 with policy = reference
    with open(tmp_path / "2e-3" / "metrics.csv") as handle:
        first = next(r for r in csv.DictReader(handle) if r.get("train/loss"))
    assert float(first["train/loss"]) == pytest.approx(math.log(2), abs=1e-5)


def test_other_data_misses_the_cache(make_cfg, tmp_path, caplog):
    cache = tmp_path / "reference-cache"
    for limit in (8, 12):
        cfg = make_cfg(*FAST, f"method.ref_cache={cache}", f"data.limit_train={limit}")
        cfg.paths.output_dir = str(tmp_path / str(limit))
        run(cfg)
    assert len(list(cache.glob("*.pt"))) == 2
