"""What every objective shares: one optimizer step per window of micro-batches.

Each training batch is a *window*: the micro-batches of one optimizer step (see
`data.collate.WindowCollator`). The method's `loss_sum` returns a loss summed over a micro-batch
and the count it is normalised by (supervised tokens for SFT, pairs for DPO); the window's loss is
sum(loss_sum) / sum(count), so the gradient does not depend on how the window is split into
micro-batches. Gradients are accumulated by hand (manual optimisation), then clipped and stepped.

Train mode is set at every step: gradient checkpointing (transformers checkpoints only
`if self.training`) and dropout depend on it, and nothing else puts a loaded model in train mode.
Whether dropout is active is a deliberate choice (`disable_dropout`), never an accident of mode.

Clipping happens in `on_before_optimizer_step`, which Lightning calls after the mixed-precision
scaler has unscaled the gradients (clipping inside `training_step` would clip the *scaled*
gradients under fp16 and limit the true norm to clip / loss_scale).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from llmft.losses import IGNORE_INDEX
from llmft.models.handle import ModelHandle

OptimizerFactory = Callable[..., Optimizer]
SchedulerFactory = Callable[[Optimizer, int], LRScheduler]


class ObjectiveModule(L.LightningModule):
    """Base LightningModule: subclasses implement `loss_sum` (and may set `view`, `needs_reference`)."""

    view: str = "chat"
    needs_reference: bool = False

    def __init__(
        self,
        handle: ModelHandle,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        gradient_clip_val: float | None = 1.0,
        disable_dropout: bool = False,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold the trainable parameters only
        self.handle = handle
        self.model = handle.model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.gradient_clip_val = gradient_clip_val
        self.disable_dropout = disable_dropout
        if disable_dropout:
            handle.disable_dropout()
        self._step_started: float | None = None
        self._grad_norm: torch.Tensor | None = None
        self._val_sums: list[torch.Tensor] = []

    # -- what a subclass provides -----------------------------------------------------------
    def loss_sum(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(loss summed over the micro-batch, normaliser count, extra summed metrics)."""
        raise NotImplementedError

    # -- training ----------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.model.train()  # before Lightning's start-of-training check; training_step keeps it so

    def training_step(self, window: list[dict[str, torch.Tensor]], batch_idx: int) -> torch.Tensor:
        started = self._step_started or time.perf_counter()
        self.model.train()  # checkpointing and dropout (unless disabled) depend on it; see the module doc
        optimizer = self.optimizers()
        total = sum(self.normaliser(micro) for micro in window)
        if total == 0:
            raise ValueError("a training window has nothing to normalise by (no supervised tokens)")
        loss_total = torch.zeros((), device=self.device)
        for micro in window:
            loss, _, _ = self.loss_sum(micro)
            scaled = loss / total
            self.manual_backward(scaled)
            loss_total += scaled.detach()
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it below)
        optimizer.step()  # unscale (fp16) -> on_before_optimizer_step (clipping) -> step
        optimizer.zero_grad(set_to_none=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        now = time.perf_counter()
        tokens = sum(int(micro["attention_mask"].sum()) for micro in window)
        self.log("train/loss", loss_total, prog_bar=True, on_step=True, on_epoch=False)
        self.log("perf/tokens_per_s", tokens / max(now - started, 1e-9), on_step=True, on_epoch=False)
        self.log("train/lr", lr, on_step=True, on_epoch=False)
        if self._grad_norm is not None:
            self.log("train/grad_norm", self._grad_norm, on_step=True, on_epoch=False)
        self._step_started = time.perf_counter()
        return loss_total

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Clip the (already unscaled) gradients; remember their pre-clip norm for the log."""
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        max_norm = self.gradient_clip_val if self.gradient_clip_val else float("inf")
        self._grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).detach() if params else None

    def normaliser(self, batch: dict[str, torch.Tensor]) -> int:
        """How many units a micro-batch's summed loss covers; the default is supervised tokens."""
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def on_train_epoch_start(self) -> None:
        self._step_started = None  # the first step's clock starts when its window arrives

    # -- validation: token-weighted over the whole split ---------------------------------------
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, count, _ = self.loss_sum(batch)
        self._val_sums.append(torch.stack([loss.detach().float(), count.float()]))

    def on_validation_epoch_end(self) -> None:
        if self._val_sums:
            loss, count = torch.stack(self._val_sums).sum(0)
            self.log("val/loss", loss / count.clamp(min=1), prog_bar=True)
        self._val_sums.clear()
        self._step_started = None

    # -- optimiser ------------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]  # biases and norms
        optimizer = self.optimizer_factory([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer, total), "interval": "step"}}

    # -- checkpoints hold the trainable parameters only (the frozen base is reloaded) -----------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
