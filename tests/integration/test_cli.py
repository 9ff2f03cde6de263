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


def test_eval_py_scores_a_finished_run_into_its_own_folder(tmp_path):
    run_dir = tmp_path / "run"
    cli("train.py", *TINY, "evaluation.limit=1", "evaluation.max_new_tokens=2", f"hydra.run.dir={run_dir}")
    assert (run_dir / "checkpoints" / "adapter" / "adapter_model.safetensors").is_file()
    run_results = {name: (run_dir / name).read_bytes() for name in ("eval.json", "eval_predictions.jsonl", "run_card.json")}
    eval_dir = tmp_path / "eval"
    out = cli("eval.py", f"run_dir={run_dir}", "evaluation.limit=2", "evaluation.max_new_tokens=4",
              f"hydra.run.dir={eval_dir}").stdout
    # regression: the re-evaluation used to overwrite the run's eval.json, so it disagreed with the run card
    assert {name: (run_dir / name).read_bytes() for name in run_results} == run_results
    report = json.loads((eval_dir / "eval.json").read_text())
    assert set(report) == {"base", "tuned"}
    assert report["tuned"]["n_examples"] == 10  # 2 per task x 5 tasks
    assert "overall" in out and "tuned" in out
    predictions = (eval_dir / "eval_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 20
    card = json.loads((eval_dir / "eval_card.json").read_text())
    assert card["run_dir"] == str(run_dir) and card["command"].startswith("python eval.py run_dir=")


def test_wandb_logger_writes_offline_files_and_csv(tmp_path):
    run_dir = tmp_path / "run"
    cli("train.py", *TINY, "evaluation.limit=1", "evaluation.max_new_tokens=2", "logger=wandb", f"hydra.run.dir={run_dir}")
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert offline and list(offline[0].glob("*.wandb")), list((run_dir / "wandb").iterdir())
    assert (run_dir / "metrics.csv").is_file()
    # the evaluation reaches W&B: its metrics and a table of sampled generations (2 models x 5 tasks x 1)
    [table] = offline[0].glob("files/media/table/eval/samples_*.table.json")
    assert len(json.loads(table.read_text())["data"]) == 10
    assert "eval/tuned/exact_match/overall" in (run_dir / "metrics.csv").read_text().splitlines()[0]


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
    # each card's command reproduces its own point of the sweep (it used to be the whole sweep line)
    commands = [json.loads(c.read_text())["command"] for c in cards]
    for command, lr in zip(commands, ("0.0001", "0.0002")):
        assert command.startswith("python train.py ") and f"optim.lr={lr}" in command
        assert "-m" not in command.split() and "1e-4,2e-4" not in command


def test_eval_py_scores_a_bare_model(tmp_path):
    out_dir = tmp_path / "eval"
    cli("eval.py", "model=tiny", "precision=fp32", "evaluation.limit=1", "evaluation.max_new_tokens=4",
        f"hydra.run.dir={out_dir}")
    report = json.loads((out_dir / "eval.json").read_text())
    assert set(report) == {"base"} and report["base"]["n_examples"] == 5
