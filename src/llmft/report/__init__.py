"""Comparison of the runs of a sweep: summary table, plots, HTML report, W&B report.

Light to import (Hydra imports it for the `SweepSummary` callback): matplotlib and
wandb-workspaces are imported only by the functions that draw or build a W&B report.
"""
from llmft.report.callback import SweepSummary
from llmft.report.html import write_report
from llmft.report.summary import frame, rows, summary_markdown, write_summary
from llmft.report.sweep import Run, Sweep, SweepError, load_sweep

__all__ = ["Run", "Sweep", "SweepError", "SweepSummary", "frame", "load_sweep", "rows", "summary_markdown",
           "write_report", "write_summary"]
