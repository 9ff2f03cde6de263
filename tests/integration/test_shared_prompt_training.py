"""Preference pairs with their prompt computed once (llmft.models.shared_prompt) train exactly as the
concatenated forward over both whole sequences: loss and every gradient to 1e-5 (fp32, tiny Llama,
the bundled pairs in SmolLM2's template)."""
from __future__ import annotations

from functools import partial

import pytest
import torch

from llmft import models
from llmft.data.collate import WindowCollator
from llmft.losses import dpo_loss, orpo_loss, simpo_loss
from llmft.methods.preference import DPO, ORPO, SimPO
from llmft.models import forward

from test_packed_training import FP32, examples, window_loss_and_grads

METHODS = {"dpo": (DPO, dpo_loss), "orpo": (ORPO, orpo_loss), "simpo": (SimPO, simpo_loss)}


def method_on(attention: str | None, name: str, peft: str):
    torch.manual_seed(0)
    handle = models.build(models.ModelSpec("llmft:tiny", attn_implementation=attention),
                          models.FullSpec() if peft == "full" else models.LoraSpec(), FP32,
                          with_reference=name == "dpo")
    with torch.no_grad():  # a policy away from its reference: DPO's rewards and margins are not all 0
        torch.manual_seed(1)
        for p in handle.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    cls, loss = METHODS[name]
    return cls(handle, optimizer=partial(torch.optim.SGD, lr=0.1), loss=loss, beta=0.1)


@pytest.mark.parametrize("name,peft", [("dpo", "full"), ("dpo", "lora"), ("orpo", "lora"), ("simpo", "full")])
def test_the_shared_prompt_forward_has_the_loss_and_gradients_of_the_concatenated_one(monkeypatch, name, peft):
    calls = []
    shared = forward.shared_prompt_logp_sums
    monkeypatch.setattr(forward, "shared_prompt_logp_sums", lambda *a: calls.append(1) or shared(*a))
    fast = method_on(None, name, peft)  # llmft_sdpa: the shared layout
    plain = method_on("sdpa", name, peft)  # plain sdpa: chosen and rejected rows concatenated
    window = WindowCollator(3, fast.handle.tokenizer.pad_token_id)(examples("pair", fast.handle, 6))
    loss_fast, grads_fast = window_loss_and_grads(fast, window)
    assert calls, "the shared-prompt path did not run"
    n_calls = len(calls)
    loss_plain, grads_plain = window_loss_and_grads(plain, window)
    assert len(calls) == n_calls, "the plain sdpa model took the shared-prompt path"
    assert torch.isfinite(loss_plain) and loss_plain > 0
    torch.testing.assert_close(loss_fast, loss_plain, atol=1e-5, rtol=0)
    assert grads_fast.keys() == grads_plain.keys() and grads_fast
    for key, grad in grads_plain.items():
        assert grad.abs().max() > 0, key
        torch.testing.assert_close(grads_fast[key], grad, atol=1e-5, rtol=0, msg=key)


def test_the_bundled_pairs_share_most_of_their_tokens(smollm2_tokenizer):
    """The saving the layout is for: every pair shares its prompt, and the row is much shorter."""
    handle = models.build(models.ModelSpec("llmft:tiny"), models.LoraSpec(), FP32)
    micro = WindowCollator(8, handle.tokenizer.pad_token_id)(examples("pair", handle, 8))[0]
    layout = forward.shared_prompt_layout(micro)
    both = int(micro["chosen_attention_mask"].sum() + micro["rejected_attention_mask"].sum())
    assert layout.input_ids.shape[1] < 0.7 * both
    assert layout.n_groups == 16 and len(layout.segments) == 8


def test_a_sliding_window_shorter_than_the_pairs_keeps_the_concatenated_forward(monkeypatch):
    """The segments attend with a plain causal mask: a model whose window is shorter than its
    sequences (Mistral, Qwen2/3, Phi-3 configs may set one) must keep transformers' own masking."""
    calls = []
    monkeypatch.setattr(forward, "shared_prompt_logp_sums", lambda *a: calls.append(1))
    handle = models.build(models.ModelSpec("llmft:tiny"), models.LoraSpec(), FP32)
    micro = WindowCollator(2, handle.tokenizer.pad_token_id)(examples("pair", handle, 2))[0]
    width = max(micro["chosen_input_ids"].shape[1], micro["rejected_input_ids"].shape[1])
    handle.model.config.sliding_window = width - 1
    forward.pair_logp_sums(handle.model, micro)
    assert not calls
    handle.model.config.sliding_window = width
    forward.pair_logp_sums(handle.model, micro)
    assert calls


def test_compiled_layers_give_the_eager_pair_sums_and_gradients():
    """`model.compile=true` with the shared-prompt rows: the same sums and gradients as eager (fp32), over
    micro-batches of different pair counts and widths (the segment attention runs outside the graph)."""
    handle = models.build(models.ModelSpec("llmft:tiny"), models.LoraSpec(), FP32)
    pairs = examples("pair", handle, 5)
    micros = [*WindowCollator(3, handle.tokenizer.pad_token_id)(pairs[:3]),
              *WindowCollator(2, handle.tokenizer.pad_token_id)(pairs[3:])]
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        handle = models.build(models.ModelSpec("llmft:tiny", compile=compiled), models.LoraSpec(), FP32)
        runs = []
        for micro in micros:
            handle.model.zero_grad(set_to_none=True)
            sums, counts = forward.pair_logp_sums(handle.model, micro)
            sums.sum().backward()
            runs.append((sums.detach(), counts, {k: p.grad.clone() for k, p in handle.trainable_parameters().items()}))
        results.append(runs)
    for (eager_sums, eager_counts, eager_grads), (sums, counts, grads) in zip(*results):
        assert torch.equal(counts, eager_counts)
        torch.testing.assert_close(sums, eager_sums, rtol=0, atol=1e-4)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, eager_grads[name], rtol=1e-4, atol=1e-5, msg=name)
