"""`hydra/launcher=slurm` against a real SLURM cluster (CI: the single-node one of shared/slurm, brought
up by .ci/run): a sweep's runs as a job array, every job COMPLETED, every run folder complete, the report
built from them. Preemption and requeue: test_preemption.py."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT


def slurm_answers() -> str | None:
    """None when `sinfo` answers, else why not (the reason the tests are skipped with)."""
    if shutil.which("sinfo") is None:
        return "no SLURM here: sinfo is not on PATH (CI brings a local cluster up with shared/slurm/up.sh)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "SLURM does not answer: sinfo timed out"
    if proc.returncode != 0:
        return f"SLURM does not answer: sinfo exited {proc.returncode}: {proc.stderr.strip()[:200]}"
    return None


NO_SLURM = slurm_answers()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(NO_SLURM is not None, reason=str(NO_SLURM))]

# a run short enough for a sweep of the machinery: tiny model, 3 steps, 2 validation batches, 1 prompt a
# task with 2 new tokens
SHORT = ["model=tiny", "precision=fp32", "trainer.max_steps=3", "++trainer.limit_val_batches=2",
         "data.limit_train=16", "data.batch_size=4", "evaluation.limit=1", "evaluation.max_new_tokens=2"]
# SLURM may send the time-limit warning up to 60 s early: 5 minutes leaves these jobs (<1 min) alone
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.timeout_min=5"]


def python(*args: str, cwd: Path, timeout: int = 900, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **popen.pop("env", {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def job_states(job_id: str) -> dict[str, str]:
    """{job id: state} of a job (every task of an array), from sacct (with accounting) or the CI
    cluster's sacct shim (which reads `scontrol show job`)."""
    proc = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,State"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("|")[:2] for line in proc.stdout.splitlines() if line.strip())


ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}


@pytest.fixture(scope="module")
def slurm_sweep(tmp_path_factory) -> Path:
    """`python train.py -m +sweep=lr_rank hydra/launcher=slurm`: 4 runs as one job array."""
    sweep_dir = tmp_path_factory.mktemp("slurm") / "sweep"
    started = time.perf_counter()
    proc = python(str(ROOT / "train.py"), "-m", "+sweep=lr_rank", *LAUNCHER, *SHORT, f"hydra.sweep.dir={sweep_dir}",
                  cwd=sweep_dir.parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"lr_rank on SLURM: {time.perf_counter() - started:.0f} s")
    return sweep_dir


def test_a_sweep_runs_as_a_slurm_job_array_to_completion(slurm_sweep):
    runs = sorted(p.parent.parent for p in slurm_sweep.glob("*/.hydra/config.yaml"))
    assert [r.name for r in runs] == ["0_sft-lora_lr0.0003_r8", "1_sft-lora_lr0.0003_r16", "2_sft-lora_lr0.001_r8",
                                      "3_sft-lora_lr0.001_r16"]
    # submitit's folder (inside the sweep folder): one <array id>_<task> folder per run
    tasks = sorted(p.name for p in (slurm_sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name))
    assert len(tasks) == 4 and len({t.split("_")[0] for t in tasks}) == 1, tasks
    # submitit hands a result back as soon as the job has written it; the job then exits, and SLURM
    # records its end a moment later
    deadline = time.monotonic() + 120
    states = job_states(tasks[0].split("_")[0])
    while ACTIVE & set(states.values()):
        assert time.monotonic() < deadline, f"jobs still active: {states}"
        time.sleep(1)
        states = job_states(tasks[0].split("_")[0])
    assert states == {task: "COMPLETED" for task in tasks}
    for run in runs:
        header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
        assert {"step", "train/loss", "val/loss"} <= set(header), (run, header)
        evaluated = json.loads((run / "eval.json").read_text())
        card = json.loads((run / "run_card.json").read_text())
        assert set(evaluated) == {"base", "tuned"} and evaluated["tuned"]["n_examples"] > 0
        assert card["eval"]["tuned"] == evaluated["tuned"]["exact_match"]["overall"]
        assert card["objective"]["name"] == "val/loss" and isinstance(card["objective"]["value"], float)
    # the sweep summary of the launching process saw every job's result
    with open(slurm_sweep / "summary.csv", newline="") as handle:
        assert sorted(row["run"] for row in csv.DictReader(handle)) == [r.name for r in runs]


def test_the_report_is_built_from_the_slurm_runs(slurm_sweep):
    script = ROOT / "sweeps" / "report.py"
    if not script.is_file():
        pytest.fail(f"{script} is missing: the sweep report script is part of the SLURM sweep's contract")
    proc = python(str(script), str(slurm_sweep), cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = (slurm_sweep / "report.html").read_text()
    for run in ("0_sft-lora_lr0.0003_r8", "3_sft-lora_lr0.001_r16"):
        assert run in report
