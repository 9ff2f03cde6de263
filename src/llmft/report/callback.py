"""Hydra callback: write summary.csv / summary.md into the sweep folder when a multirun ends.

Wired in the Hydra config as `hydra.callbacks.sweep_summary._target_: llmft.report.SweepSummary`.
"""
from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarise `hydra.sweep.dir`. A failure is logged, not raised: the runs are on disk
        already, and `python sweeps/report.py <sweep dir>` can summarise them later."""
        from llmft.report.summary import write_summary
        from llmft.report.sweep import SweepError, load_sweep

        sweep_dir = str(config.hydra.sweep.dir)
        try:
            sweep = load_sweep(sweep_dir)
            csv_path, md_path = write_summary(sweep)
        except (SweepError, OSError, ValueError) as error:
            log.error("sweep summary not written: %s", error)
            return
        log.info("sweep summary: %s, %s (%d finished, %d unfinished runs)", csv_path, md_path,
                 len(sweep.finished), len(sweep.unfinished))
        if sweep.best is not None:
            log.info("best on %s: %s (%.6g)", sweep.objective_name, sweep.best.name, sweep.best.objective.value)
        log.info("report: python sweeps/report.py %s", sweep_dir)
