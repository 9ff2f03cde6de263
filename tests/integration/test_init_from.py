"""init_from=<run>: SFT -> DPO in two commands; the parent model is the reference."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from llmft import models
from llmft.runs import finished_run, lineage
from llmft.train import run

FAST = ("model=tiny", "precision=fp32", "evaluate=false", "data.limit_train=8", "data.batch_size=4")
INPUT = torch.tensor([[1, 20, 300, 4000, 5, 60, 7, 80]])
TINY, FP32 = models.ModelSpec("llmft:tiny"), models.PrecisionSpec("32-true")


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=INPUT).logits


def train(cfg, folder):
    """What `python train.py` does: the run, plus the resolved config Hydra writes into .hydra/."""
    cfg.paths.output_dir = str(folder)
    result = run(cfg)
    (folder / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    return result


def parent_run(make_cfg, tmp_path, peft: str):
    train(make_cfg(*FAST, f"peft={peft}", "trainer.max_steps=2", "optim.lr=5e-2"), tmp_path / f"sft-{peft}")
    return tmp_path / f"sft-{peft}"


@pytest.mark.parametrize("peft", ["lora", "full"])
def test_the_reference_after_init_from_is_the_parent_model(make_cfg, tmp_path, peft):
    parent = parent_run(make_cfg, tmp_path, peft)
    saved = finished_run(parent).saved
    parent_logits = logits(models.load_finished(saved, TINY, models.LoraSpec() if peft == "lora" else models.FullSpec(),
                                                FP32).model)
    base_logits = logits(models.build(TINY, models.FullSpec(), FP32).model)
    assert not torch.allclose(parent_logits, base_logits, atol=1e-3)  # the parent really moved

    result = train(make_cfg(*FAST, "method=dpo", f"peft={peft}", "trainer.max_steps=1", f"init_from={parent}"),
                   tmp_path / "dpo")
    with result["handle"].reference() as reference:
        torch.testing.assert_close(logits(reference), parent_logits, rtol=0, atol=1e-5)
    card = json.loads((tmp_path / "dpo" / "run_card.json").read_text())
    assert card["init_from"] == str(parent)

    # eval.py's "base" of the DPO run is its starting point: the parent, merged in again from the lineage
    from llmft.evaluate import models_to_score

    *ancestors, dpo_saved = lineage(finished_run(tmp_path / "dpo"))
    assert ancestors == [saved]
    spec = models.LoraSpec() if peft == "lora" else models.FullSpec()
    _, contexts, _ = models_to_score(TINY, spec, FP32, dpo_saved, torch.device("cpu"), ancestors)
    with contexts["base"]() as base:
        torch.testing.assert_close(logits(base), parent_logits, rtol=0, atol=1e-5)


def test_init_from_a_folder_that_is_not_a_finished_run_names_what_is_missing(make_cfg, tmp_path):
    folder = tmp_path / "half"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 1\n")
    with pytest.raises(FileNotFoundError, match=rf"init_from={folder}: no checkpoints/adapter or checkpoints/model"):
        run(make_cfg(*FAST, "method=dpo", f"init_from={folder}"))
    with pytest.raises(FileNotFoundError, match=rf"init_from={tmp_path / 'nothing'}: no such folder"):
        run(make_cfg(*FAST, "method=dpo", f"init_from={tmp_path / 'nothing'}"))


def test_qlora_from_an_adapter_run_keeps_the_parent_adapter_frozen_and_as_the_reference(make_cfg, tmp_path):
    from safetensors.torch import load_file

    from llmft.evaluate import models_to_score

    parent = parent_run(make_cfg, tmp_path, "lora")
    qlora = models.LoraSpec(quantize="nf4", name="qlora")
    parent_logits = logits(models.load_finished(finished_run(parent).saved, TINY, qlora, FP32).model)
    result = train(make_cfg(*FAST, "method=dpo", "peft=qlora", "trainer.max_steps=2", "optim.lr=5e-2",
                            f"init_from={parent}"), tmp_path / "dpo")
    model = result["handle"].model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n for n in trainable)  # the parent adapter never trains
    with result["handle"].reference() as reference:  # a 4-bit base with the parent adapter only
        torch.testing.assert_close(logits(reference), parent_logits, rtol=0, atol=1e-5)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable  # restored after
    assert not torch.allclose(logits(model), parent_logits, atol=1e-4)  # the trained adapter is active
    saved = load_file(tmp_path / "dpo" / "checkpoints" / "adapter" / "adapter_model.safetensors")
    assert saved and not any("parent" in k for k in saved)  # only the trained adapter is saved

    *ancestors, dpo_saved = lineage(finished_run(tmp_path / "dpo"))
    _, contexts, _ = models_to_score(TINY, qlora, FP32, dpo_saved, torch.device("cpu"), ancestors)
    with contexts["base"]() as base:
        torch.testing.assert_close(logits(base), parent_logits, rtol=0, atol=1e-5)
    with contexts["tuned"]() as tuned:
        torch.testing.assert_close(logits(tuned), logits(model), rtol=0, atol=1e-5)
