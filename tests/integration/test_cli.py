"""The command lines of the README, run as a user runs them (tiny model)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

TINY = ["model=tiny", "trainer.max_steps=2", "data.limit_train=16", "data.batch_size=4", "precision=fp32"]


def cli(script: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_help_lists_the_groups():
    out = cli("train.py", "--help").stdout
    for group in ("model", "method", "peft", "data", "precision", "trainer", "logger", "paths"):
        assert f"\n{group}: " in out, group
    assert "peft: full, lora, qlora" in out


def test_eval_py_scores_a_finished_run(tmp_path):
    run_dir = tmp_path / "run"
    cli("train.py", *TINY, "evaluate=false", f"hydra.run.dir={run_dir}")
    assert (run_dir / "checkpoints" / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run_dir / "eval.json").exists()
    out = cli("eval.py", f"run_dir={run_dir}", "evaluation.limit=2", "evaluation.max_new_tokens=4",
              f"hydra.run.dir={tmp_path / 'eval'}").stdout
    report = json.loads((run_dir / "eval.json").read_text())
    assert set(report) == {"base", "tuned"}
    assert report["tuned"]["n_examples"] == 10  # 2 per task x 5 tasks
    assert "overall" in out and "tuned" in out
    predictions = (run_dir / "eval_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 20


def test_wandb_logger_writes_offline_files_and_csv(tmp_path):
    run_dir = tmp_path / "run"
    cli("train.py", *TINY, "evaluate=false", "logger=wandb", f"hydra.run.dir={run_dir}")
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert offline and list(offline[0].glob("*.wandb")), list((run_dir / "wandb").iterdir())
    assert (run_dir / "metrics.csv").is_file()


def test_train_prints_the_before_after_table(tmp_path):
    out = cli("train.py", *TINY, "evaluation.limit=1", "evaluation.max_new_tokens=4",
              f"hydra.run.dir={tmp_path / 'run'}").stdout
    assert "exact match (%)" in out and "base" in out and "tuned" in out and "overall" in out


def test_multirun_sweep_writes_one_run_folder_per_point(tmp_path):
    cli("train.py", "-m", "model=tiny", "precision=fp32", "trainer.max_steps=1", "data.limit_train=8", "evaluate=false",
        "optim.lr=1e-4,2e-4", f"paths.runs_dir={tmp_path}")
    cards = sorted(tmp_path.glob("multirun/*/*/*/run_card.json"))
    assert [c.parent.name for c in cards] == ["0_sft-lora", "1_sft-lora"]
    lrs = [next(line for line in (c.parent / ".hydra" / "config.yaml").read_text().splitlines() if "  lr:" in line)
           for c in cards]
    assert lrs == ["  lr: 0.0001", "  lr: 0.0002"]


def test_eval_py_scores_a_bare_model(tmp_path):
    out_dir = tmp_path / "eval"
    cli("eval.py", "model=tiny", "precision=fp32", "evaluation.limit=1", "evaluation.max_new_tokens=4",
        f"hydra.run.dir={out_dir}")
    report = json.loads((out_dir / "eval.json").read_text())
    assert set(report) == {"base"} and report["base"]["n_examples"] == 5
