"""What tests read off a model and a run folder: parameter snapshots and the logged metrics."""
from __future__ import annotations

import csv
from pathlib import Path

import torch


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def logged(folder: Path) -> list[dict]:
    """The rows of the run's metrics.csv."""
    with open(Path(folder) / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def run_checking_what_trains(cfg) -> tuple[dict, dict[str, torch.Tensor]]:
    """`train.run(cfg)`, asserting that exactly the trainable parameters changed and that a frozen reference
    copy (full fine-tuning) did not move. Returns run's result and the head's initial parameters (or {})."""
    from hydra.utils import instantiate
    import lightning as L

    from llmft import models
    from llmft.train import run

    L.seed_everything(cfg.seed, workers=True)  # as run() does: the same initial adapters and head
    built = models.build(instantiate(cfg.model), instantiate(cfg.peft), instantiate(cfg.precision),
                         head=instantiate(cfg.method).func.head)
    before = snapshot(built.model)
    head_before = snapshot(built.head) if built.head is not None else {}
    result = run(cfg)
    handle = result["handle"]
    after = snapshot(handle.model)
    trainable = {n for n, p in handle.model.named_parameters() if p.requires_grad}
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    assert changed == trainable, changed ^ trainable
    if handle.frozen_copy is not None:
        assert all(torch.equal(p, before[n]) for n, p in snapshot(handle.frozen_copy).items())
    return result, head_before
