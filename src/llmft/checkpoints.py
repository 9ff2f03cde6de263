"""Resume checkpoints: written atomically every `every_n_steps` optimizer steps (and when a SLURM
job is told it will be preempted), the newest `keep_last_k` kept, in `<run>/checkpoints/resume/`.

A checkpoint is Lightning's (trainable parameters, optimizer, schedule, grad scaler, loop
progress, the datamodule's position in the epoch) plus what Lightning leaves out: every RNG state
(Python, NumPy, torch CPU and CUDA). It is saved at an optimizer-step boundary, so a run killed
inside a window of micro-batches replays that window whole.

Atomic: the file is written under a temporary name, flushed to disk and renamed, so a crash during
a save leaves the previous checkpoint valid and no half file under a checkpoint's name.

Preemption: under submitit (`hydra/launcher=slurm`) the job's preemption signal (USR2 unless
`SUBMITIT_PREEMPT_SIGNAL` says otherwise) is caught here first: the run finishes its current step,
checkpoints, stops, and then hands the signal to submitit's own handler, which requeues the job
(submitit is the one owner of the requeue; Lightning's SLURM auto-requeue is off). The requeued job
resumes into the same run folder.
"""
from __future__ import annotations

import logging
import os
import random
import re
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

log = logging.getLogger(__name__)
PATTERN = re.compile(r"^step-(\d{8})\.ckpt$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.ckpt"


def saved_checkpoints(folder: str | Path) -> list[Path]:
    """The finished checkpoints in `folder`, oldest first (temporary files of a cut save are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def rng_states() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": _numpy_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> tuple:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return kind, keys.tolist(), int(pos), int(has_gauss), float(cached)  # plain types: loadable with weights_only


def fsync_replace(tmp: Path, final: Path) -> None:
    """Flush `tmp` to disk, rename it to `final`, flush the folder entry."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ResumeCheckpoints(L.Callback):
    """Atomic step checkpoints for exact resume, the newest `keep_last_k` kept; checkpoints and stops
    on a submitit preemption signal (see the module doc)."""

    def __init__(self, dirpath: str, every_n_steps: int = 20, keep_last_k: int = 2, on_preemption: bool = True):
        if every_n_steps < 1:
            raise ValueError(f"callbacks.resume_checkpoints.every_n_steps={every_n_steps}: must be at least 1")
        if keep_last_k < 1:
            raise ValueError(f"callbacks.resume_checkpoints.keep_last_k={keep_last_k}: must be at least 1 "
                             "(a resume needs a checkpoint)")
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.keep_last_k = keep_last_k
        self.on_preemption = on_preemption
        self.preempted = False  # set by the signal; acted on at the next step boundary
        self._signal: int | None = None
        self._previous_handler: Any = None
        self._rng_to_restore: dict[str, Any] | None = None
        self._trainer: L.Trainer | None = None
        self._saved_step = -1  # the global step of the newest checkpoint

    # -- saving ----------------------------------------------------------------------------------
    def save(self, trainer: L.Trainer) -> Path:
        """Write the checkpoint of the current step atomically, then drop the oldest beyond keep_last_k.
        The loggers are flushed first, so metrics.csv holds every step the checkpoint holds."""
        for logger in trainer.loggers:
            logger.save()
        self.dirpath.mkdir(parents=True, exist_ok=True)
        final = self.dirpath / checkpoint_name(trainer.global_step)
        tmp = self.dirpath / f".{final.name}.{os.getpid()}.tmp"
        try:
            trainer.save_checkpoint(tmp, weights_only=False)  # the whole state, not the weights only
            fsync_replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        for old in saved_checkpoints(self.dirpath)[: -self.keep_last_k]:
            old.unlink()
        self._saved_step = trainer.global_step
        log.info("checkpoint %s", final)
        return final

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.preempted:
            self.save(trainer)
            log.warning("preempted: checkpointed at step %d; handing over to submitit to requeue", trainer.global_step)
            trainer.should_stop = True
        elif trainer.global_step // self.every_n_steps > max(self._saved_step, 0) // self.every_n_steps:
            self.save(trainer)  # an online method's steps grow by several per batch: crossing a multiple counts

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The final step too: a job preempted during the evaluation after training resumes without training."""
        if not self.preempted and self._saved_step != trainer.global_step:
            self.save(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    # -- resuming --------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng_to_restore = state_dict["rng"]  # set when training starts: nothing in set-up draws from them

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_step = trainer.global_step  # a resumed run: the checkpoint it started from
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    # -- preemption ------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trainer = trainer
        if self.on_preemption and os.environ.get("SUBMITIT_FOLDER"):  # inside a job submitit started
            self._signal = preemption_signal()
            self._previous_handler = signal.signal(self._signal, self._request_stop)
            log.info("preemption: %s checkpoints, then submitit requeues", signal.Signals(self._signal).name)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After training, the signal is submitit's again: a job preempted while it evaluates is requeued
        at once (it resumes from the final checkpoint, and evaluates)."""
        if self._signal is not None and not self.preempted:
            previous = self._previous_handler
            signal.signal(self._signal, previous if previous is not None else signal.SIG_DFL)

    def _request_stop(self, signum: int, frame: Any) -> None:
        log.warning("caught %s: checkpointing at the end of this step", signal.Signals(signum).name)
        self.preempted = True

    def hand_over(self) -> None:
        """After a preempted fit: give the signal to submitit's handler (it requeues the job and exits).
        A signal that came outside a training step (during validation) is checkpointed here."""
        if self._trainer is not None and self._saved_step != self._trainer.global_step:
            self.save(self._trainer)
        handler, self._previous_handler = self._previous_handler, None
        signal.signal(self._signal, handler if callable(handler) else signal.SIG_DFL)
        if callable(handler):
            handler(self._signal, None)
        raise SystemExit(f"preempted: checkpointed in {self.dirpath}")


def preemption_signal() -> int:
    """The signal submitit asks SLURM to send before a time limit or preemption (its own setting)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    found = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)
    if not isinstance(found, signal.Signals):
        raise ValueError(f"SUBMITIT_PREEMPT_SIGNAL={name}: not a signal name (e.g. USR2, USR1, TERM)")
    return found
