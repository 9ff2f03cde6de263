"""The run's objective: one number on the validation split, returned by `train.py` to a sweeper
(Optuna optimises it) and written to the run card, so a sweep selects on validation and reports test.

    val/loss         the method's loss on the validation split after training (SFT, preference, reward)
    val/exact_match  greedy exact match on the suite's validation split (the test protocol, other rows)
    val/reward       an online method's held-out reward at the end of the run (validation prompts)
"""
from __future__ import annotations

import dataclasses

import lightning as L

from llmft.constants import OBJECTIVE_DIRECTIONS as DIRECTIONS


def objective_name(configured: str | None, online: bool) -> str:
    name = configured or ("val/reward" if online else "val/loss")
    if name not in DIRECTIONS:
        raise ValueError(f"objective={name}: choose one of {sorted(DIRECTIONS)}")
    if online and name == "val/loss":
        raise ValueError("objective=val/loss: an online method has no validation loss; use val/reward or val/exact_match")
    return name


def validation_loss(trainer: L.Trainer, method: L.LightningModule, datamodule: L.LightningDataModule) -> float:
    """`val/loss` of the final model: from the last validation pass if it ran after the last optimizer
    step, else from one run now (logged like any validation)."""
    if getattr(method, "validated_at_step", None) != trainer.global_step or "val/loss" not in trainer.callback_metrics:
        trainer.validate(method, datamodule=datamodule, verbose=False)
    return float(trainer.callback_metrics["val/loss"])


def validation_exact_match(evaluator, model) -> float:
    """Exact match of `model` on the suite's validation split (the evaluator's settings, split=val)."""
    spec = dataclasses.replace(evaluator.spec, split="val")
    report, _ = type(evaluator)(evaluator.renderer, spec, [], evaluator.autocast_dtype)(model, "val")
    return report["exact_match"]["overall"]


def card_entry(name: str, value: float | None) -> dict:
    return {"name": name, "value": value, "direction": DIRECTIONS[name], "split": "validation"}
