"""LoRA's folded forward (`models.adapters.plain_lora_forward`) and the cached cast of a frozen output layer
(`models.forward.head_weight`) compute bit for bit what peft's forward and a fresh cast compute (tiny Llama)."""
from __future__ import annotations

import contextlib

import pytest
import torch
from peft.tuners.lora.layer import Linear as LoraLinear

from llmft import models
from llmft.models import adapters, forward
from llmft.models.adapters import is_power_of_two, plain_lora_forward
from llmft.models.forward import head_weight, supervised_nll_sum

SPEC = models.ModelSpec("llmft:tiny")


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, 4000, (3, 14), generator=generator)
    mask = torch.tensor([[1] * n + [0] * (14 - n) for n in (14, 9, 11)])
    labels = torch.where(mask.bool(), input_ids, torch.full_like(input_ids, -100))
    labels[:, :5] = -100
    return {"input_ids": input_ids.masked_fill(~mask.bool(), 0), "attention_mask": mask, "labels": labels}


def build(lora: models.LoraSpec, precision: str) -> models.ModelHandle:
    torch.manual_seed(0)
    handle = models.build(SPEC, lora, models.PrecisionSpec(precision))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # B nonzero, so the adapters change the result
        for p in handle.trainable_parameters().values():
            p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    return handle


def loss_and_grads(handle: models.ModelHandle, precision: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        nll, n = supervised_nll_sum(handle.model, batch())
    (nll / n).backward()
    grads = {name: p.grad.clone() for name, p in handle.trainable_parameters().items()}
    handle.model.zero_grad(set_to_none=True)
    return (nll / n).detach(), grads


def count_peft_forwards(monkeypatch) -> list:
    """Calls of peft's own `lora.Linear.forward` from here on (the folded forward falls back to it)."""
    calls = []
    original = LoraLinear.forward
    monkeypatch.setattr(LoraLinear, "forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    return calls


def peft_forward_everywhere(model: torch.nn.Module) -> int:
    """Take the folded forward off every LoRA layer (peft's class forward again); how many had it."""
    folded = [m for m in model.modules() if isinstance(m, LoraLinear) and "forward" in m.__dict__]
    for layer in folded:
        del layer.forward
    return len(folded)


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_the_folded_lora_forward_gives_peft_s_loss_and_gradients_bit_for_bit(precision, monkeypatch):
    handle = build(models.LoraSpec(r=8, alpha=32), precision)  # scaling 4
    peft_calls = count_peft_forwards(monkeypatch)
    read = []  # the inputs the folded layers read: autocast's bf16 copies, or as they are in fp32
    shared = adapters.autocast_input
    monkeypatch.setattr(adapters, "autocast_input", lambda x: read.append(shared(x)) or read[-1])
    fast_loss, fast_grads = loss_and_grads(handle, precision)
    assert not peft_calls  # every layer took the folded branch
    # base and lora_A of q, k, v read one copy, of gate and up another; o and down their own inputs
    layers = handle.model.config.num_hidden_layers
    assert len(read) == 2 * 7 * layers and len({t.untyped_storage().data_ptr() for t in read}) == 4 * layers
    assert all(t.dtype == (torch.bfloat16 if precision == "bf16-mixed" else torch.float32) for t in read)
    read.clear()
    lora_layers = [m for m in handle.model.modules() if isinstance(m, LoraLinear)]
    assert peft_forward_everywhere(handle.model) == len(lora_layers) == 7 * handle.model.config.num_hidden_layers
    monkeypatch.setattr(forward, "head_weight", lambda head: head.weight)  # and the head cast afresh
    peft_loss, peft_grads = loss_and_grads(handle, precision)
    assert torch.equal(fast_loss, peft_loss)
    assert fast_grads.keys() == peft_grads.keys()
    for name in peft_grads:
        torch.testing.assert_close(fast_grads[name], peft_grads[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(("lora", "dtype"), [(models.LoraSpec(r=16, alpha=24), torch.bfloat16),
                                             (models.LoraSpec(dropout=0.1), torch.bfloat16),
                                             (models.LoraSpec(), torch.float16)],
                         ids=["scaling 1.5", "dropout", "fp16 autocast"])
def test_a_scaling_that_is_not_a_power_of_two_dropout_or_fp16_keep_peft_s_forward(lora, dtype, monkeypatch):
    """Folding 1.5 into lora_B would round differently from peft's `lora_B(h) * 1.5`; so would fp16 for
    small weights: such layers (and layers with dropout) go through peft's own forward."""
    handle = build(lora, "bf16-mixed")
    handle.model.eval()  # dropout off, so two forwards can be compared
    layer = next(m for m in handle.model.modules() if isinstance(m, LoraLinear))
    x = torch.randn(2, 5, layer.in_features, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=dtype):
        peft_own = type(layer).forward(layer, x)
        folded_anyway = layer.base_layer(x) + torch.nn.functional.linear(
            layer.lora_A["default"](x), layer.lora_B["default"].weight * layer.scaling["default"])
        peft_calls = count_peft_forwards(monkeypatch)
        through_fast_path = plain_lora_forward(layer, x)
    assert peft_calls == [1]
    assert torch.equal(through_fast_path, peft_own)
    if lora.alpha == 24:
        assert not torch.equal(folded_anyway, peft_own)  # what the guard prevents


def test_powers_of_two():
    assert all(is_power_of_two(v) for v in (1.0, 2.0, 4.0, 0.5, 0.25, 1024.0))
    assert not any(is_power_of_two(v) for v in (1.5, 3.0, 0.3, 0.0, -2.0))


def test_a_frozen_output_layer_is_cast_once_and_again_after_it_changes():
    handle = build(models.LoraSpec(), "bf16-mixed")
    head = handle.model.get_output_embeddings()
    assert not head.weight.requires_grad and head.weight.dtype == torch.float32
    assert head_weight(head) is head.weight  # no autocast: as it is
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first, again = head_weight(head), head_weight(head)
        assert first is again and first.dtype == torch.bfloat16 and torch.equal(first, head.weight.to(torch.bfloat16))
        with torch.no_grad():
            head.weight.mul_(2)  # e.g. weights loaded in place: the version counter moves
        changed = head_weight(head)
        assert changed is not first and torch.equal(changed, head.weight.to(torch.bfloat16))
        head.weight.requires_grad_(True)
        assert head_weight(head) is head.weight  # a trainable head is cast by the matmul, every time


def test_a_forward_for_hidden_states_leaves_the_output_layer_alone(monkeypatch):
    """`final_hidden_states` asks for no logits; the output layer is then not run at all (under autocast
    it would cast its whole float32 weight), the states are those of the forward that runs it bit for bit, and
    the layer is as it was afterwards, also after an error."""
    handle = build(models.LoraSpec(), "bf16-mixed")
    model, head, inputs = handle.model, handle.model.get_output_embeddings(), batch()
    called = []
    original = torch.nn.Linear.forward
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: called.append(self) or original(self, x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        states = forward.final_hidden_states(model, inputs)
        assert called and not any(module is head for module in called)
        with monkeypatch.context() as patched:
            patched.setattr(forward, "head_untouched", lambda _model: contextlib.nullcontext())
            plain = forward.final_hidden_states(model, inputs)  # the head run on zero positions
    assert any(module is head for module in called)
    assert torch.equal(states, plain)
    assert "forward" not in head.__dict__
    with (pytest.raises(RuntimeError, match="logits_to_keep"), torch.autocast("cpu", dtype=torch.bfloat16),
          forward.head_untouched(model)):
        model(input_ids=inputs["input_ids"])  # every position's logits: not what the context is for
    assert "forward" not in head.__dict__
