"""Training attention on a CPU goes through `causal_attention` (sdpa's forward, a matmul backward): the same
loss bit for bit under bf16 autocast and the same gradients to 1e-5 in float32 (tiny Llama, grouped heads)."""
from __future__ import annotations

import pytest
import torch

from llmft import models
from llmft.models import attention
from llmft.models.forward import supervised_nll_sum
from tests.integration.test_lora_fast_forward import batch, build, loss_and_grads

SPEC = models.ModelSpec("llmft:tiny")


@pytest.mark.parametrize(("peft", "precision"), [(models.LoraSpec(), "bf16-mixed"), (models.FullSpec(), "32-true")],
                         ids=["lora bf16", "full fp32"])
def test_the_matmul_backward_gives_the_flash_loss_and_its_gradients(peft, precision, monkeypatch):
    handle = build(peft, precision) if isinstance(peft, models.LoraSpec) else models.build(
        SPEC, peft, models.PrecisionSpec(precision))  # LoRA with B nonzero: every adapter gradient matters
    assert handle.model.config.num_key_value_heads < handle.model.config.num_attention_heads  # grouped heads
    calls = []
    original = attention.causal_attention
    monkeypatch.setattr(attention, "causal_attention", lambda *args: calls.append(1) or original(*args))
    autocast = precision == "bf16-mixed"
    matmul_loss, matmul_grads = loss_and_grads(handle, precision)
    assert len(calls) == handle.model.config.num_hidden_layers
    monkeypatch.setenv("LLMFT_ATTENTION_BACKWARD", "flash")
    flash_loss, flash_grads = loss_and_grads(handle, precision)
    assert len(calls) == handle.model.config.num_hidden_layers  # not called again
    assert torch.equal(matmul_loss, flash_loss)
    assert all(grad.norm() > 0 for grad in flash_grads.values())
    for name, grad in flash_grads.items():
        if autocast:  # bf16 rounding of other products: close, not equal
            assert (matmul_grads[name] - grad).norm() <= 0.02 * grad.norm(), name
        else:
            torch.testing.assert_close(matmul_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_evaluation_and_masked_batches_keep_sdpa(monkeypatch):
    torch.manual_seed(0)
    handle = models.build(SPEC, models.LoraSpec(), models.PrecisionSpec("32-true"))
    monkeypatch.setattr(attention, "causal_attention", lambda *args: pytest.fail("no backward is needed here"))
    with torch.no_grad():
        supervised_nll_sum(handle.model, batch())
    left_padded = batch()
    left_padded["attention_mask"] = left_padded["attention_mask"].flip(1)  # a mask is passed: sdpa with it
    left_padded["input_ids"] = left_padded["input_ids"].flip(1)
    left_padded["labels"] = left_padded["labels"].flip(1)
    nll, _ = supervised_nll_sum(handle.model, left_padded)
    nll.backward()
