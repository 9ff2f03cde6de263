"""Runs that need CUDA (skipped on CPU-only machines, run on a GPU machine)."""
from __future__ import annotations

import pytest
import torch

from llmft import models
from llmft.evaluate import models_to_score
from llmft.train import run

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("peft", ["lora", "full"])
def test_tuned_evaluation_runs_on_the_training_device(make_cfg, peft):
    """Lightning's teardown moves the module to the CPU; the tuned evaluation used to run there."""
    result = run(make_cfg("model=tiny", f"peft={peft}", "precision=fp32", "trainer.max_steps=2", "data.limit_train=8",
                          "data.batch_size=4", "evaluation.limit=1", "evaluation.max_new_tokens=2"))
    assert {p.device.type for p in result["handle"].model.parameters()} == {"cuda"}


def test_eval_py_scores_on_the_gpu(tmp_path):
    spec, fp32 = models.ModelSpec("llmft:tiny"), models.PrecisionSpec("32-true")
    saved = models.build(spec, models.LoraSpec(), fp32).save(tmp_path)
    _, contexts, _ = models_to_score(spec, models.LoraSpec(), fp32, saved, torch.device("cuda"))
    for name, context in contexts.items():
        with context() as model:
            assert {p.device.type for p in model.parameters()} == {"cuda"}, name
