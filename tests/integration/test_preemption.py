"""Preemption on the local SLURM cluster: a running job is sent its preemption signal; it checkpoints
at the end of the step, submitit requeues it, the requeued job resumes the same run folder and
finishes, and its per-step losses equal an uninterrupted run's bit for bit (fp32, one thread each:
the job's one CPU)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests.integration.test_resume import ROOT, per_step, train

pytestmark = pytest.mark.slurm

RUN = ["model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=24", "data.limit_train=64",
       "callbacks.resume_checkpoints.every_n_steps=4"]


def cluster_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0


@pytest.fixture(autouse=True)
def needs_cluster():
    if not cluster_answers():
        pytest.skip("no SLURM cluster answers `sinfo` (start one with ../shared/slurm/up.sh)")


def job_field(job: str, field: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    found = re.search(rf"\b{field}=(\S+)", shown)
    return found.group(1) if found else ""


def test_a_signalled_job_checkpoints_requeues_and_matches_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    train(*RUN, f"hydra.run.dir={reference}")  # OMP_NUM_THREADS=1, as the job's one CPU

    # the sweep folder has ${now:...} in it: the requeued job must land in the folder its first attempt used
    runs = tmp_path / "runs"
    launcher = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=slurm", "hydra.launcher.timeout_min=10",
         *RUN, "+callbacks.slow._target_=helpers.interrupt.SlowSteps", "+callbacks.slow.seconds=0.3",
         f"paths.runs_dir={runs}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "tests" / "integration")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (found := list(runs.glob("multirun/*/*/0_sft-lora/checkpoints/resume/step-*.ckpt"))):
            assert launcher.poll() is None, launcher.stdout.read()[-3000:]  # the job is training, past a checkpoint
            assert time.monotonic() < deadline, "the job wrote no checkpoint in 4 minutes"
            time.sleep(0.5)
        run_dir = found[0].parents[2]
        sweep = run_dir.parent
        jobs = [p.name for p in (sweep / ".submitit").iterdir() if p.name[0].isdigit()]
        assert len(jobs) == 1, jobs
        job = jobs[0]
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        # SLURM holds a requeued job for a while (its begin time); start it as soon as it is requeued
        while not (job_field(job, "Restarts") == "1" and job_field(job, "JobState") == "PENDING"):
            assert launcher.poll() is None and time.monotonic() < deadline + 120, "the job was not requeued"
            time.sleep(0.5)
        time.sleep(1.1)  # a later second than the first attempt's: a re-resolved ${now:%H-%M-%S} would differ
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
        output, _ = launcher.communicate(timeout=400)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, output[-3000:]

    for _ in range(60):  # submitit returns on the job's result file, SLURM marks it a moment later
        if job_field(job, "JobState") != "RUNNING":
            break
        time.sleep(1)
    assert job_field(job, "JobState") == "COMPLETED"
    assert job_field(job, "Restarts") == "1"  # requeued once, by submitit
    folders = [p for p in runs.glob("multirun/*/*/*") if p.is_dir() and not p.name.startswith(".")]
    assert folders == [run_dir], "the requeued job wrote another run folder"
    log = (run_dir / "train.log").read_text()
    assert "checkpointing at the end of this step" in log and "requeued SLURM job" in log
    assert "submitit owns the requeue (Lightning's auto-requeue off); 1 torch threads" in log
    assert per_step(run_dir, "train/loss") == per_step(reference, "train/loss")
    assert len(per_step(reference, "train/loss")) == 24
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["torch"]["num_threads"] == 1  # the job's one CPU (hydra.launcher.cpus_per_task=1)
