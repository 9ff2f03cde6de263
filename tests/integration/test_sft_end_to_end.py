"""End-to-end SFT on the tiny random Llama (real SmolLM2 tokenizer): full, lora, qlora."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from llmft.models.embedded import resolve
from llmft.train import run
from tests.integration.observe import snapshot

FAST = ("model=tiny", "trainer.max_steps=3", "data.limit_train=48", "data.batch_size=4", "precision=fp32")


def base_weights() -> dict[str, torch.Tensor]:
    return load_file(f"{resolve('llmft:tiny')}/model.safetensors")


@pytest.mark.parametrize("peft", ["full", "lora", "qlora"])
def test_sft_trains_what_it_should_and_nothing_else(make_cfg, tmp_path, peft):
    extra = ("evaluation.limit=1", "evaluation.max_new_tokens=4") if peft == "lora" else ("evaluate=false",)
    cfg = make_cfg(*FAST, f"peft={peft}", *extra)
    from llmft import models
    from hydra.utils import instantiate

    # The same build train.py does, to know the parameters before training.
    before = snapshot(models.build(instantiate(cfg.model), instantiate(cfg.peft), instantiate(cfg.precision)).model)
    result = run(cfg)
    after = {n: p.detach() for n, p in result["handle"].model.named_parameters()}
    trainable = {n for n, p in result["handle"].model.named_parameters() if p.requires_grad}
    assert set(after) == set(before)
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    assert changed == trainable, f"changed but frozen: {changed - trainable}; trainable but unchanged: {trainable - changed}"
    for name in set(after) - trainable:  # frozen parameters are bit-identical
        assert torch.equal(after[name], before[name]), name
    if peft == "full":
        assert len(trainable) == len(after)
        saved = load_file(tmp_path / "checkpoints" / "model" / "model.safetensors")
        assert any(not torch.equal(saved[k], v) for k, v in base_weights().items() if k in saved)
    else:
        assert trainable and all("lora_" in n for n in trainable)
        adapter = load_file(tmp_path / "checkpoints" / "adapter" / "adapter_model.safetensors")
        assert adapter and all("lora_" in k for k in adapter)
    if peft == "qlora":
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in result["handle"].model.modules())

    # The run folder of DESIGN.md.
    assert (tmp_path / "checkpoints" / "resume" / "config.yaml").is_file()  # resume checkpoints: see test_resume.py
    with open(tmp_path / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert all(float(r["perf/tokens_per_s"]) > 0 for r in rows)
    card = json.loads((tmp_path / "run_card.json").read_text())
    assert card["optimizer_steps"] == 3 and card["peak_memory"]["cpu_max_rss_mib"] > 0
    assert card["chat_template_sha256"] and card["packages"]["torch"]
    if peft == "lora":
        report = json.loads((tmp_path / "eval.json").read_text())
        assert set(report) == {"base", "tuned"}
        for side in report.values():
            assert set(side["exact_match"]) == {"overall", "tool_call", "arithmetic", "word_list", "multi_turn", "policy"}
            assert all(0.0 <= v <= 1.0 for v in side["exact_match"].values())
            assert side["perplexity"] > 1.0


def test_sft_on_a_user_file_in_alpaca_format(make_cfg, tmp_path):
    import hashlib

    rows = [{"instruction": f"Repeat the number {i}.", "input": "", "output": str(i)} for i in range(12)]
    data = tmp_path / "alpaca.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = make_cfg("model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=2", "data=file",
                   f"data.path={data}", "data.format=alpaca", "data.val_fraction=0.25", "data.batch_size=3")
    result = run(cfg)
    card = result["card"]
    assert card["examples"] == {"train": 9, "val": 3}
    assert card["data_files"] == {str(data): hashlib.sha256(data.read_bytes()).hexdigest()}
    assert card["optimizer_steps"] == 2
