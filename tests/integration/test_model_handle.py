"""The model handle on the tiny Llama: reference model, merged inference, saving and reloading."""
from __future__ import annotations

import pytest
import torch

from llmft import models

SPEC = models.ModelSpec("llmft:tiny")
FP32 = models.PrecisionSpec("32-true")
INPUT = torch.tensor([[1, 20, 300, 4000, 5, 60]])


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT).logits


def perturb_trainable(handle: models.ModelHandle) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in handle.trainable_parameters().values():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))


@pytest.mark.parametrize("peft", [models.LoraSpec(), models.FullSpec()])
def test_reference_is_the_untrained_model(peft):
    base = logits(models.build(SPEC, models.FullSpec(), FP32).model)
    handle = models.build(SPEC, peft, FP32, with_reference=True)
    torch.testing.assert_close(logits(handle.model), base, rtol=0, atol=0)  # LoRA starts as a no-op
    perturb_trainable(handle)
    assert not torch.allclose(logits(handle.model), base)
    with handle.reference() as reference:
        torch.testing.assert_close(logits(reference), base, rtol=0, atol=0)
    assert not torch.allclose(logits(handle.model), base)  # the adapter is back on after the context


def test_qlora_still_backpropagates_through_the_4bit_base_after_an_inference_forward():
    """Sampling and the reference forward run the 4-bit layers in eval mode without grad; on CPUs with
    AVX512-BF16, bitsandbytes would then switch them for good to a kernel that passes no gradient on."""
    handle = models.build(SPEC, models.LoraSpec(quantize="nf4", name="qlora"), FP32)
    handle.model.eval()
    logits(handle.model)
    handle.model.train()
    handle.model(input_ids=INPUT, labels=INPUT).loss.backward()
    # Every lora_B starts at zero, so the first layer's q_proj gets a gradient only through the
    # 4-bit o_proj, down_proj, ... above it.
    grad = dict(handle.model.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"].grad
    assert grad is not None and grad.abs().sum() > 0


def test_full_handle_without_reference_copy_says_how_to_get_one():
    handle = models.build(SPEC, models.FullSpec(), FP32)
    with pytest.raises(RuntimeError, match="with_reference=True"):
        with handle.reference():
            pass


def test_merged_inference_matches_and_restores_weights_bit_exactly():
    handle = models.build(SPEC, models.LoraSpec(), FP32)
    perturb_trainable(handle)
    before = {n: p.detach().clone() for n, p in handle.model.named_parameters()}
    expected = logits(handle.model)
    with handle.merged() as merged:
        torch.testing.assert_close(logits(merged), expected, rtol=1e-5, atol=1e-5)
    for name, param in handle.model.named_parameters():
        assert torch.equal(param, before[name]), name
    torch.testing.assert_close(logits(handle.model), expected, rtol=0, atol=0)


@pytest.mark.parametrize("peft", [models.LoraSpec(), models.FullSpec()])
def test_save_and_reload_gives_the_same_model(tmp_path, peft):
    handle = models.build(SPEC, peft, FP32)
    perturb_trainable(handle)
    saved = handle.save(tmp_path)
    assert saved.name == ("adapter" if isinstance(peft, models.LoraSpec) else "model")
    reloaded = models.load_finished(saved, SPEC, peft, FP32)
    torch.testing.assert_close(logits(reloaded.model), logits(handle.model), rtol=0, atol=0)
