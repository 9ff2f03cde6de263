"""The run's objective: one number on the validation split, returned by `train.py` to a sweeper
(Optuna optimises it) and written to the run card, so a sweep selects on validation and reports test.

    val/loss         the method's loss on the validation split after training (SFT, preference, reward)
    val/exact_match  greedy exact match on the suite's validation split (the test protocol, other rows)
    val/reward       an online method's held-out reward at the end of the run (validation prompts)
"""
from __future__ import annotations

import dataclasses
import logging

import lightning as L

from llmft.constants import OBJECTIVE_DIRECTIONS as DIRECTIONS

log = logging.getLogger(__name__)


def objective_name(configured: str | None, online: bool) -> str:
    name = configured or ("val/reward" if online else "val/loss")
    if name not in DIRECTIONS:
        raise ValueError(f"objective={name}: choose one of {sorted(DIRECTIONS)}")
    if online and name == "val/loss":
        raise ValueError("objective=val/loss: an online method has no validation loss; use val/reward or val/exact_match")
    return name


def after_training(name: str, trainer: L.Trainer, method: L.LightningModule, datamodule) -> float | None:
    """The objective when training has ended (`val/exact_match` is measured with the evaluation: None here)."""
    if name == "val/reward":
        return method.heldout[-1]["reward"]["mean"] if method.heldout else None
    if name == "val/loss":
        return validation_loss(trainer, method, datamodule)
    return None


def validation_loss(trainer: L.Trainer, method: L.LightningModule, datamodule) -> float | None:
    """`val/loss` of the final model: from the last validation pass if it ran after the last optimizer
    step, else from one run now (logged like any validation). None, with a warning, without validation
    examples (or with validation turned off)."""
    if not datamodule.val_examples:
        log.warning("objective val/loss: no validation examples (data.val_path / data.val_fraction), not measured")
        return None
    if getattr(method, "validated_at_step", None) != trainer.global_step or "val/loss" not in trainer.callback_metrics:
        trainer.validate(method, datamodule=datamodule, verbose=False)
    value = trainer.callback_metrics.get("val/loss")
    if value is None:
        log.warning("objective val/loss: the validation loop did not run (trainer.limit_val_batches?), not measured")
    return None if value is None else float(value)


def validation_exact_match(evaluator, model) -> float:
    """Exact match of `model` on the suite's validation split (the evaluator's settings, split=val)."""
    spec = dataclasses.replace(evaluator.spec, split="val")
    report, _ = type(evaluator)(evaluator.renderer, spec, [], evaluator.autocast_dtype)(model, "val")
    return report["exact_match"]["overall"]


def card_entry(name: str, value: float | None) -> dict:
    return {"name": name, "value": value, "direction": DIRECTIONS[name], "split": "validation"}
