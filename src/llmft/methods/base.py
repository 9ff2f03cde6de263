"""What every objective shares: one optimizer step per window of micro-batches.

Each training batch is a *window*: the micro-batches of one optimizer step (see
`data.collate.WindowCollator`). A method declares what it needs (DESIGN.md "Methods"):

    view = "pair"           which encoder data/ uses: chat | pair | unpaired | prompt
    needs_reference = True  a frozen reference: the policy with adapters disabled (PEFT) or a frozen
                            copy (full), registered as the submodule `reference_model` so it follows
                            device and dtype; its forwards always run in eval mode, without gradients
    head = None             None | "score" | "value": a head built by models/, trained and saved

and implements `loss_sum(micro, ctx) -> (loss_sum, count, metrics)`: the loss summed over the
micro-batch, the count it is normalised by (supervised tokens for SFT, pairs for DPO), and
metrics as {name: (sum, count)}. The window's loss is sum(loss_sum) / sum(count), so the gradient
does not depend on how the window is split into micro-batches; `prepare_window(window) -> ctx`
runs first over the whole window (KTO's KL reference point needs every row before any backward).
The base class logs every metric as sum / count: `train/<name>` per optimizer step,
`val/<name>` over the whole validation split.

Train mode is set at every step: gradient checkpointing (transformers checkpoints only
`if self.training`) and dropout depend on it, and nothing else puts a loaded model in train mode.
Whether dropout is active is a deliberate choice (`disable_dropout`), never an accident of mode.

Clipping happens in `on_before_optimizer_step`, which Lightning calls after the mixed-precision
scaler has unscaled the gradients (clipping inside `training_step` would clip the *scaled*
gradients under fp16 and limit the true norm to clip / loss_scale).
"""
from __future__ import annotations

import contextlib
import inspect
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from llmft.losses import IGNORE_INDEX
from llmft.models.handle import ModelHandle

OptimizerFactory = Callable[..., Optimizer]
SchedulerFactory = Callable[[Optimizer, int], LRScheduler]
Metrics = dict[str, tuple[torch.Tensor, torch.Tensor | float]]  # name -> (sum, count)


class ObjectiveModule(L.LightningModule):
    """Base LightningModule: subclasses implement `loss_sum` and declare `view`, `needs_reference`, `head`."""

    view: str = "chat"
    needs_reference: bool = False
    head: str | None = None
    generates: bool = False

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
        if handle.frozen_copy is not None:
            self.reference_model = handle.frozen_copy  # a submodule: Lightning moves and casts it
        if handle.head is not None:
            self.scalar_head = handle.head  # trained with the policy and saved with it
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.gradient_clip_val = gradient_clip_val
        self.disable_dropout = disable_dropout
        if disable_dropout:
            handle.disable_dropout()
        self._step_started: float | None = None
        self._grad_norm: torch.Tensor | None = None
        self._val_sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(2, dtype=torch.float64))
        self.validated_at_step: int | None = None

    @classmethod
    def check_config(cls, **options: Any) -> None:
        """Fail on a bad `method.*` option before any model is loaded (unknown names, bad values)."""
        try:
            inspect.signature(cls).bind_partial(**options)
        except TypeError as err:
            raise ValueError(f"method {cls.__name__}: {err} (see conf/method/ for its options)") from None

    # -- what a subclass provides -----------------------------------------------------------
    def loss_sum(self, micro: dict, ctx: Any = None) -> tuple[torch.Tensor, torch.Tensor | int, Metrics]:
        """(loss summed over the micro-batch, normaliser count, {metric: (sum, count)})."""
        raise NotImplementedError

    def normaliser(self, micro: dict) -> int:
        """How many units a micro-batch's summed loss covers; the default is supervised tokens."""
        return int((micro["labels"][:, 1:] != IGNORE_INDEX).sum())

    def prepare_window(self, window: list[dict]) -> Any:
        """A pre-pass over the whole window before any backward; its result reaches every loss_sum."""
        return None

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The frozen reference policy, in eval mode and without gradients."""
        with self.handle.reference() as reference:
            yield reference

    # -- training ----------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.model.train()  # before Lightning's start-of-training check; training_step keeps it so

    def training_step(self, window: list[dict], batch_idx: int) -> torch.Tensor:
        started = self._step_started or time.perf_counter()
        self.model.train()  # checkpointing and dropout (unless disabled) depend on it; see the module doc
        optimizer = self.optimizers()
        total = sum(self.normaliser(micro) for micro in window)
        if total == 0:
            raise ValueError("a training window has nothing to normalise by (no supervised tokens)")
        ctx = self.prepare_window(window)
        loss_total = torch.zeros((), device=self.device)
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(2, dtype=torch.float64))
        for micro in window:
            loss, _, metrics = self.loss_sum(micro, ctx)
            scaled = loss / total
            self.manual_backward(scaled)
            loss_total += scaled.detach()
            _accumulate(sums, metrics)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it below)
        optimizer.step()  # unscale (fp16) -> on_before_optimizer_step (clipping) -> step
        optimizer.zero_grad(set_to_none=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        now = time.perf_counter()
        tokens = sum(int(v.sum()) for micro in window for k, v in micro.items() if k.endswith("attention_mask"))
        self.log("train/loss", loss_total, prog_bar=True, on_step=True, on_epoch=False)
        self.log("perf/tokens_per_s", tokens / max(now - started, 1e-9), on_step=True, on_epoch=False)
        self.log("train/lr", lr, on_step=True, on_epoch=False)
        if self._grad_norm is not None:
            self.log("train/grad_norm", self._grad_norm, on_step=True, on_epoch=False)
        for name, (value, count) in sums.items():
            self.log(f"train/{name}", value / max(count, 1.0), on_step=True, on_epoch=False)
        self._step_started = time.perf_counter()
        return loss_total

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Clip the (already unscaled) gradients; remember their pre-clip norm for the log."""
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        max_norm = self.gradient_clip_val if self.gradient_clip_val else float("inf")
        self._grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).detach() if params else None

    def on_train_epoch_start(self) -> None:
        self._step_started = None  # the first step's clock starts when its window arrives

    # -- validation: weighted over the whole split -----------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, count, metrics = self.loss_sum(batch, self.prepare_window([batch]))
        _accumulate(self._val_sums, {"loss": (loss, count), **metrics})

    def on_validation_epoch_end(self) -> None:
        for name, (value, count) in self._val_sums.items():
            self.log(f"val/{name}", value / max(count, 1.0), prog_bar=name == "loss")
        self._val_sums.clear()
        self.validated_at_step = self.global_step  # the objective's val/loss is current
        self._step_started = None

    # -- optimiser: every trainable parameter of the module (the policy, and heads) ----------------
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]  # biases and norms
        optimizer = self.optimizer_factory([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        if self.scheduler_factory is None:
            return optimizer
        total = self.total_optimizer_steps()
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer, total), "interval": "step"}}

    def total_optimizer_steps(self) -> int:
        """What the learning-rate schedule spans: one optimizer step per training batch here."""
        return int(self.trainer.estimated_stepping_batches)

    # -- checkpoints hold the trainable parameters only (the frozen base is reloaded) -----------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}


def _accumulate(sums: dict[str, torch.Tensor], metrics: Metrics) -> None:
    """Add {name: (sum, count)} into float64 [sum, count] accumulators (on the CPU: one sync a step)."""
    for name, (value, count) in metrics.items():
        sums[name] += torch.stack([_scalar(value), _scalar(count)])


def _scalar(value: torch.Tensor | float) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64).reshape(())
    return torch.tensor(float(value), dtype=torch.float64)


class BetaObjective(ObjectiveModule):
    """An objective with a loss function from config and a positive `method.beta` (the preference
    methods and KTO); preference methods turn dropout off by default, as TRL does."""

    def __init__(self, handle: ModelHandle, optimizer: OptimizerFactory, loss: Callable[..., Any], beta: float,
                 scheduler: SchedulerFactory | None = None, gradient_clip_val: float | None = 1.0,
                 disable_dropout: bool = True):
        super().__init__(handle, optimizer, scheduler, gradient_clip_val, disable_dropout)
        self.check_config(beta=beta)
        self.loss = loss
        self.beta = beta

    @classmethod
    def check_config(cls, **options: Any) -> None:
        super().check_config(**options)
        if "beta" in options and not options["beta"] > 0:
            raise ValueError(f"method.beta={options['beta']}: must be positive")
