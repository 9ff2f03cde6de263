"""The real SmolLM2-135M-Instruct (embedded GGUF -> safetensors cache). Minutes on a CPU: marked slow."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch

from llmft import models
from llmft.data.templates import ChatRenderer
from llmft.models.embedded import resolve
from llmft.models.decoding import generate_greedy
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_embedded_model_converts_once_and_answers():
    folder = resolve("llmft:smollm2-135m-instruct")
    config = json.loads(open(f"{folder}/config.json").read())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    handle = models.build(models.ModelSpec("llmft:smollm2-135m-instruct"), models.FullSpec(), models.PrecisionSpec("32-true"))
    renderer = ChatRenderer(handle.tokenizer, 512)
    prompt = renderer.prompt_text([{"role": "user", "content": "What is the capital of France?"}])
    answer = generate_greedy(handle.model, handle.tokenizer, [prompt], max_new_tokens=16)[0]
    assert "Paris" in answer


@pytest.mark.parametrize("peft", ["full", "qlora"])
def test_train_py_runs_on_the_real_model(tmp_path, peft):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "train.py", f"peft={peft}", "trainer.max_steps=5", "data.batch_size=2", "evaluate=false",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["optimizer_steps"] == 5 and card["peft"] == peft
    saved = run_dir / "checkpoints" / ("model" if peft == "full" else "adapter")
    assert any(saved.glob("*.safetensors"))
    with open(run_dir / "metrics.csv") as handle:
        losses = [float(r["train/loss"]) for r in csv.DictReader(handle) if r["train/loss"]]
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))
