"""The training loop as Lightning drives it: train mode, epochs, run length, logged lr, clipping."""
from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from llmft import models
from llmft.data.datamodule import ViewDataModule
from llmft.data.rows import DataSpec, load_rows
from llmft.data.templates import ChatRenderer
from llmft.methods.schedules import warmup_cosine
from llmft.methods.sft import SFT
from llmft.train import run
from tests.integration import probe

PROBE = "+callbacks.probe._target_=tests.integration.probe.Probe"


@pytest.mark.parametrize("peft", ["full", "lora", "qlora"])
def test_steps_run_in_train_mode_with_checkpointing_across_reshuffled_epochs(make_cfg, tmp_path, peft):
    # 32 rows in windows of 4 = 8 steps an epoch; max_steps=16 must run two epochs (max_epochs unset)
    cfg = make_cfg("model=tiny", f"peft={peft}", "precision=fp32", "evaluate=false", "model.gradient_checkpointing=true",
                   "trainer.max_steps=16", "data.limit_train=32", "data.batch_size=4", PROBE)
    result = run(cfg)
    records = probe.RECORDS

    # 1. train mode in every training forward, so gradient checkpointing really runs (2 layers x 16 steps)
    assert records["training"] and all(records["training"]), f"eval-mode forwards: {records['training'].count(False)}"
    assert records["checkpoint_calls"] == 2 * 16
    # 5. max_steps decides the length when max_epochs is not set (it used to stop after one epoch: 8 steps)
    assert result["card"]["optimizer_steps"] == 16
    # 2. each epoch's windows are the sampler's windows for that epoch: Lightning reseeds it, and they differ
    assert sorted(records["windows"]) == [0, 1]
    for epoch in (0, 1):
        assert records["windows"][epoch] == records["expected_windows"][epoch], epoch
    assert records["windows"][0] != records["windows"][1]
    # 6. the logged lr is the rate each step used: the schedule's first value first
    with open(tmp_path / "metrics.csv") as handle:
        logged = [float(r["train/lr"]) for r in csv.DictReader(handle) if r.get("train/lr")]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    schedule = warmup_cosine(optimizer, 16, warmup_ratio=cfg.schedule.warmup_ratio)
    expected = []
    for _ in range(16):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert logged == pytest.approx(expected, rel=1e-6)
    assert logged[0] == pytest.approx(cfg.optim.lr / 3)  # warm-up of 2 steps: lr x 1/3 on step 0


def test_dropout_is_a_choice_not_an_accident_of_eval_mode(make_cfg, tmp_path):
    """method.disable_dropout=false keeps LoRA dropout active in training steps; true zeroes it."""
    for disable in (False, True):
        cfg = make_cfg("model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=1", "data.limit_train=4",
                       "data.batch_size=4", "peft.dropout=0.5", f"method.disable_dropout={disable}", PROBE)
        cfg.paths.output_dir = str(tmp_path / f"disable_{disable}")  # each run its own folder
        model = run(cfg)["handle"].model
        dropouts = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" in n]
        assert dropouts and all(m.p == (0.0 if disable else 0.5) for m in dropouts)
        assert all(probe.RECORDS["training"])


def update_norm(precision_plugin) -> float:
    """Norm of one SGD step (lr 1, clip 1.0) of full fine-tuning on the tiny model."""
    L.seed_everything(0)
    spec = models.PrecisionSpec(trainer="32-true")
    handle = models.build(models.ModelSpec("llmft:tiny"), models.FullSpec(), spec)
    data = DataSpec(batch_size=4, limit_train=4)
    datamodule = ViewDataModule(load_rows(data, "chat", 0), ChatRenderer(handle.tokenizer, 256), 4, 1, 0)
    before = [p.detach().clone() for p in handle.model.parameters()]
    method = SFT(handle, optimizer=lambda groups: torch.optim.SGD(groups, lr=1.0), gradient_clip_val=1.0)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu", plugins=[precision_plugin])
    trainer.fit(method, datamodule=datamodule)
    assert method._grad_norm > 1.0  # the clip is active, so the update norm is exactly the clip value
    return torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(handle.model.parameters(), before))).item()


def test_fp16_loss_scaling_clips_the_true_gradient_norm():
    """Clipping runs after the scaler unscales: it used to clip the scaled gradients (norm 1 / 65536)."""
    from lightning.pytorch.plugins.precision import Precision

    fp32 = update_norm(Precision())
    fp16 = update_norm(MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu")))
    assert fp32 == pytest.approx(1.0, rel=1e-4)
    assert fp16 == pytest.approx(fp32, rel=1e-2)
