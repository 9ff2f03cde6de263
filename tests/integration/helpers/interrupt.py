"""Callbacks that interrupt a run at a chosen point, for the resume tests. A test adds one as
`+callbacks.<name>._target_=helpers.interrupt.<Class>` with `tests/integration` on PYTHONPATH. Each acts
once: it leaves `marker` behind and does nothing when the marker exists, since the resumed run carries
the same callbacks config."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L


class KillInsideWindow(L.Callback):
    """SIGKILL (no handler, no warning) after the backward of micro-batch `micro` of optimizer step `step`
    (0-based): inside an accumulation window."""

    def __init__(self, step: int, marker: str, micro: int = 0):
        self.step, self.micro, self.marker, self.seen = step, micro, Path(marker), 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen = 0

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step and self.seen == self.micro and not self.marker.exists():
            self.marker.write_text(f"killed at step {self.step}, after the backward of micro-batch {self.micro}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        self.seen += 1


class _Bomb:
    """Kills the process when pickled: torch.save has opened the checkpoint file by then."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)


class KillDuringSave(L.Callback):
    """SIGKILL while the checkpoint of optimizer step `step` is being written (once, see `marker`)."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, Path(marker)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(f"killed while saving step {self.step}\n")
            checkpoint["kill_while_writing"] = _Bomb()


class SlowSteps(L.Callback):
    """Sleeps after every optimizer step, so that a test has time to signal a running job; it changes
    no number the run computes."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import time

        time.sleep(self.seconds)
