"""Batch 8 x accumulation 1 takes the same optimizer step as batch 1 x accumulation 8."""
from __future__ import annotations

import torch

from llmft.train import run


def one_step(make_cfg, batch_size: int, accumulate: int, out) -> dict[str, torch.Tensor]:
    cfg = make_cfg(
        "model=tiny", "peft=full", "precision=fp32", "evaluate=false", "trainer.max_steps=1",
        f"data.batch_size={batch_size}", f"trainer.accumulate_grad_batches={accumulate}",
        "data.limit_train=64", "trainer.gradient_clip_val=null", "schedule=constant",
        # plain SGD: the update is proportional to the gradient (Adam's first step is nearly sign(g))
        "optim._target_=torch.optim.SGD", "~optim.betas", "~optim.eps", "optim.lr=1.0", "callbacks={}", "logger={}",
    )
    cfg.paths.output_dir = str(out)  # a folder of its own: a run refuses one with another run's checkpoints
    handle = run(cfg)["handle"]
    return {n: p.detach().clone() for n, p in handle.model.named_parameters()}


def test_accumulation_equivalence(make_cfg, tmp_path):
    initial = one_step(make_cfg, 8, 1, tmp_path / "8x1")
    accumulated = one_step(make_cfg, 1, 8, tmp_path / "1x8")
    moved = 0
    for name, value in initial.items():
        torch.testing.assert_close(accumulated[name], value, rtol=0, atol=1e-5, msg=name)
    # and the step really moved the weights (the comparison is not between two untouched models)
    from safetensors.torch import load_file
    from llmft.models.embedded import resolve

    base = load_file(f"{resolve('llmft:tiny')}/model.safetensors")
    moved = sum(not torch.allclose(initial[f"{k}"], v) for k, v in base.items() if k in initial)
    assert moved > 0
