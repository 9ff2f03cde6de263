"""Fixtures shared by the integration tests that need finished runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# A 2 x 2 grid of the tiny model (lr x LoRA rank). data.limit_train=24 makes the 3 steps one whole
# epoch (3 windows of 8), so every run also logs val/loss to metrics.csv at the epoch's end.
TINY_SWEEP = ["model=tiny", "optim.lr=1e-3,3e-3", "peft.r=4,8", "trainer.max_steps=3", "data.limit_train=24",
              "evaluation.limit=2"]


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> Path:
    """The folder of a real `python train.py -m ...` sweep: 4 finished runs of the tiny model
    (`<n>_sft-lora/`, swept optim.lr in {1e-3, 3e-3} x peft.r in {4, 8}), about a minute on 2 CPU cores.
    Run through Hydra with the `SweepSummary` callback, so summary.csv / summary.md are in it.
    Session-scoped and shared: tests must not change it (copy it to change it)."""
    folder = tmp_path_factory.mktemp("sweeps") / "tiny_sweep"
    command = [sys.executable, "train.py", "-m", *TINY_SWEEP, f"hydra.sweep.dir={folder}",
               "++hydra.callbacks.sweep_summary._target_=llmft.report.SweepSummary"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{proc.stderr[-4000:]}"
    return folder
