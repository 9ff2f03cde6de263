"""Training throughput as the run card reports it (`throughput`), measured over the whole loop.

A step's time is the wall time from the end of the previous optimizer step (or the start of the
epoch, or the end of a validation pass) to the end of this one: data loading, forward, backward,
the optimizer and logging, everything a researcher waits for (on a GPU, until its kernels finish). The first `warmup_steps` steps are
left out of the rates (allocator and kernel warm-up, lazy initialisation). Tokens are the real
(non-padding) tokens the forward passes computed over, counted as the data layer counts them
(`data.packing.forward_slots`), so the padding fraction is of the same batches.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import lightning as L
import torch

from llmft.data.packing import forward_slots
from llmft.models.forward import runs_padding_free


@dataclass
class StepRecord:
    seconds: float
    tokens: int  # real tokens computed over
    slots: int  # token slots computed over (real + padding)
    examples: int
    loss: float | None


class Throughput(L.Callback):
    """Records every optimizer step (`StepRecord`); `summary()` is the run card's `throughput`."""

    def __init__(self, warmup_steps: int = 1):
        if warmup_steps < 0:
            raise ValueError(f"callbacks.throughput.warmup_steps={warmup_steps}: must be >= 0")
        self.warmup_steps = warmup_steps
        self.steps: list[StepRecord] = []
        self._clock: float | None = None

    def _restart(self) -> None:
        self._clock = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restart()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restart()  # a validation pass is not part of the next step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if pl_module.device.type == "cuda":  # the step's kernels finished, not only queued
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        started = self._clock if self._clock is not None else now
        micros = batch if isinstance(batch, list) else [batch]
        tokens = slots = examples = 0
        counts_tokens = not getattr(pl_module, "generates", False)  # an online method's batch is prompts only
        padding_free = hasattr(pl_module, "model") and runs_padding_free(pl_module.model)
        for micro in micros:
            if counts_tokens and isinstance(micro, dict) and any(key.endswith("attention_mask") for key in micro):
                real, total = forward_slots(micro, padding_free)
                tokens, slots = tokens + real, slots + total
            if isinstance(micro, dict):
                examples += _examples(micro)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.steps.append(StepRecord(now - started, tokens, slots, examples,
                                     float(loss) if loss is not None else None))
        self._clock = time.perf_counter()

    def timed(self) -> list[StepRecord]:
        return self.steps[self.warmup_steps:]

    def summary(self) -> dict:
        """Rates over the steps after the warm-up: None where no step was timed."""
        timed = self.timed()
        seconds = sum(step.seconds for step in timed)
        tokens, slots = sum(step.tokens for step in timed), sum(step.slots for step in timed)
        rate = (lambda amount: round(amount / seconds, 2)) if seconds > 0 else (lambda amount: None)
        return {
            "warmup_steps": min(self.warmup_steps, len(self.steps)),
            "timed_steps": len(timed),
            "median_step_seconds": round(statistics.median(s.seconds for s in timed), 4) if timed else None,
            "tokens_per_s": rate(tokens) if tokens else None,
            "examples_per_s": rate(sum(step.examples for step in timed)),
            "padding_fraction": round(1 - tokens / slots, 4) if slots else None,
        }


def _examples(micro: dict) -> int:
    """Training examples in a micro-batch: one `meta` entry each (packed or not); else its rows."""
    if "meta" in micro:
        return len(micro["meta"])
    ids = next((value for key, value in micro.items() if key.endswith("input_ids")), None)
    return int(ids.shape[0]) if ids is not None else 0
