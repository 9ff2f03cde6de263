"""Fast paths compute what the plain paths compute (tiny Llama, real SmolLM2 tokenizer ids): frozen Linear
weights stored in the autocast dtype, right-padded batches without an attention mask, chunked log-probs."""
from __future__ import annotations

import pytest
import torch

from llmft import models
from llmft.losses import linear_logps, sft_loss_sum, token_logps
from llmft.models.forward import (chunkable_head, is_right_padded, model_inputs, sequence_logp_sums, supervised_logits,
                                  supervised_nll_sum)

SPEC = models.ModelSpec("llmft:tiny")


def right_padded_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    lengths = [12, 7, 9]
    input_ids = torch.randint(10, 4000, (3, 12), generator=generator)
    mask = torch.tensor([[1] * n + [0] * (12 - n) for n in lengths])
    labels = torch.where(mask.bool(), input_ids, torch.full_like(input_ids, -100))
    labels[:, :4] = -100  # a prompt
    return {"input_ids": input_ids.masked_fill(~mask.bool(), 0), "attention_mask": mask, "labels": labels}


def loss_and_grads(handle: models.ModelHandle, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll, n = sft_loss_sum(*supervised_logits(handle.model, batch))
    (nll / n).backward()
    grads = {name: p.grad.clone() for name, p in handle.trainable_parameters().items()}
    return (nll / n).detach(), grads


def test_frozen_linears_in_the_autocast_dtype_compute_bit_for_bit_as_autocast_casting_them():
    batch = right_padded_batch()
    torch.manual_seed(0)
    plain = models.build(SPEC, models.LoraSpec(), models.PrecisionSpec("bf16-mixed", frozen_linears="float32"))
    torch.manual_seed(0)
    fast = models.build(SPEC, models.LoraSpec(), models.PrecisionSpec("bf16-mixed"))
    dtypes = {name: p.dtype for name, p in fast.model.named_parameters()}
    assert dtypes["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"] == torch.bfloat16
    assert all(dtype == torch.float32 for name, dtype in dtypes.items() if "lora_" in name or "norm" in name
               or "embed_tokens" in name)
    for handle in (plain, fast):  # the same adapter weights, B nonzero so the adapters matter
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in handle.trainable_parameters().values():
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    plain_loss, plain_grads = loss_and_grads(plain, batch)
    fast_loss, fast_grads = loss_and_grads(fast, batch)
    assert torch.equal(plain_loss, fast_loss)
    assert plain_grads.keys() == fast_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name], rtol=0, atol=0, msg=name)


def test_full_fine_tuning_and_fp32_keep_every_weight_as_loaded():
    for peft, precision in [(models.FullSpec(), models.PrecisionSpec("bf16-mixed")),
                            (models.LoraSpec(), models.PrecisionSpec("32-true"))]:
        handle = models.build(SPEC, peft, precision)
        assert {p.dtype for p in handle.model.parameters()} == {torch.float32}


def test_a_right_padded_batch_runs_without_a_mask_and_gives_the_masked_logits():
    handle = models.build(SPEC, models.LoraSpec(), models.PrecisionSpec("32-true"))
    batch = right_padded_batch()
    assert is_right_padded(batch["attention_mask"])
    assert "attention_mask" not in model_inputs(handle.model, batch)
    with torch.no_grad():
        masked = handle.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        unmasked = handle.model(**model_inputs(handle.model, batch)).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(unmasked[real], masked[real], rtol=1e-5, atol=1e-5)


def test_a_left_padded_batch_keeps_its_mask():
    handle = models.build(SPEC, models.LoraSpec(), models.PrecisionSpec("32-true"))
    batch = right_padded_batch()
    batch["attention_mask"] = batch["attention_mask"].flip(-1)
    assert not is_right_padded(batch["attention_mask"])
    assert "attention_mask" in model_inputs(handle.model, batch)


def test_llmft_sdpa_packed_row_equals_each_document_alone():
    from llmft.models.attention import NAME
    from llmft.models.forward import document_bounds

    handle = models.build(SPEC, models.LoraSpec(), models.PrecisionSpec("32-true"))
    assert handle.model.config._attn_implementation == NAME
    ids = torch.randint(10, 4000, (1, 20), generator=torch.Generator().manual_seed(0))
    positions = torch.cat([torch.arange(8), torch.arange(12)])[None]
    with torch.no_grad():
        packed = handle.model(input_ids=ids, position_ids=positions, use_cache=False,
                              **document_bounds(positions)).logits
        first, second = (handle.model(input_ids=part, use_cache=False).logits for part in (ids[:, :8], ids[:, 8:]))
    torch.testing.assert_close(packed[:, :8], first, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed[:, 8:], second, rtol=1e-5, atol=1e-5)


def varlen_contract(newer_torch: bool):
    """`torch.nn.attention.varlen.varlen_attn` as its docstring defines it ([tokens, heads, head_dim],
    documents at `cu_seq`), by per-document sdpa: the CUDA kernel cannot run on this machine, so this
    checks the layout llmft hands it. torch 2.13 takes `window_size`, `enable_gqa` and `scale`; 2.9
    `is_causal` and no scale (the default 1/sqrt(head_dim) then)."""
    def attend(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, **options):
        assert cu_q.dtype == torch.int32 and options.get("window_size", (-1, 0)) == (-1, 0)
        assert options.get("is_causal", True) and (newer_torch or k.shape[1] == q.shape[1])
        bounds = cu_q.tolist()
        return torch.cat([torch.nn.functional.scaled_dot_product_attention(
            q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1), is_causal=True, scale=scale,
            enable_gqa=True).transpose(0, 1) for s, e in zip(bounds[:-1], bounds[1:])])

    if newer_torch:
        return lambda q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False: \
            attend(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale, window_size=window_size)
    return lambda q, k, v, cu_q, cu_k, max_q, max_k, *, is_causal=False, return_aux=None: \
        attend(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=is_causal)


@pytest.mark.parametrize("newer_torch", [True, False])
def test_the_cuda_varlen_call_gives_the_per_document_attention_of_the_loop(monkeypatch, newer_torch):
    from llmft.models import attention

    monkeypatch.setattr(attention, "varlen_attn", varlen_contract(newer_torch))
    attention._varlen_parameters.cache_clear()
    try:
        module = torch.nn.Module()
        module.num_key_value_groups = 2
        generator = torch.Generator().manual_seed(0)
        query, key, value = (torch.randn(1, heads, 17, 8, generator=generator) for heads in (4, 2, 2))
        bounds = torch.tensor([0, 5, 11, 17])
        fast = attention.varlen_causal(query, key, value, bounds, 6, 8**-0.5)
        loop, _ = attention.sdpa_per_document(module, query, key, value, None, cu_seq_lens_q=bounds, max_length_q=6,
                                              scaling=8**-0.5, dropout=0.0)  # on a CPU: the loop
        assert fast.shape == loop.shape == (1, 17, 4, 8)
        torch.testing.assert_close(fast, loop, rtol=1e-5, atol=1e-6)
    finally:
        attention._varlen_parameters.cache_clear()


def test_llmft_sdpa_outside_a_packed_row_is_sdpa_bit_for_bit_under_bf16_autocast(monkeypatch):
    """The same kernel as transformers' sdpa (and so TRL's): the first-step losses of the two agree. With the
    flash backward the gradients too (the matmul backward's: test_attention_backward.py)."""
    monkeypatch.setenv("LLMFT_ATTENTION_BACKWARD", "flash")
    batch = right_padded_batch()
    results = []
    for attention in (None, "sdpa"):
        torch.manual_seed(0)
        handle = models.build(models.ModelSpec("llmft:tiny", attn_implementation=attention), models.LoraSpec(),
                              models.PrecisionSpec("bf16-mixed"))
        results.append(loss_and_grads(handle, batch))
    assert torch.equal(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        assert torch.equal(grad, results[1][1][name]), name


def plain_and_chunked(handle: models.ModelHandle, batch: dict, autocast: bool) -> list:
    """(loss, gradients) of the SFT loss by the plain `logits_to_keep` path, then by the chunked one."""
    results = []
    for nll_and_count in (lambda: sft_loss_sum(*supervised_logits(handle.model, batch)),
                          lambda: supervised_nll_sum(handle.model, batch)):
        handle.model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            nll, n = nll_and_count()
        (nll / n).backward()
        results.append((int(n), (nll / n).detach(),
                        {name: p.grad.clone() for name, p in handle.trainable_parameters().items()}))
    return results


@pytest.mark.parametrize("chunk_rows", [1024, 5])
@pytest.mark.parametrize("peft", [models.LoraSpec(), models.FullSpec()], ids=["lora", "full"])
def test_chunked_log_probs_give_the_plain_loss_and_gradients_to_1e_5(peft, chunk_rows, monkeypatch):
    """LoRA: frozen output layer (the gradient factor made in the forward); full: tied, trainable output layer
    (recomputed in the backward). fp32, chunks of 1,024 rows and of 5."""
    monkeypatch.setattr(linear_logps, "DEFAULT_CHUNK_ROWS", chunk_rows)
    torch.manual_seed(0)
    handle = models.build(SPEC, peft, models.PrecisionSpec("32-true"))
    assert chunkable_head(handle.model) is handle.model.get_output_embeddings()
    batch = right_padded_batch()
    (plain_n, plain_loss, plain_grads), (n, loss, grads) = plain_and_chunked(handle, batch, autocast=False)
    assert n == plain_n == int((batch["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=1e-5)
    assert grads.keys() == plain_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_chunked_log_probs_per_row_equal_the_plain_ones_in_small_chunks(monkeypatch):
    torch.manual_seed(0)
    handle = models.build(SPEC, models.LoraSpec(), models.PrecisionSpec("32-true"))
    batch = right_padded_batch()
    with torch.no_grad():
        logits, labels = supervised_logits(handle.model, batch)
        plain = token_logps(logits, labels).sum(-1)
        monkeypatch.setattr(linear_logps, "DEFAULT_CHUNK_ROWS", 5)
        sums, counts = sequence_logp_sums(handle.model, batch)
    torch.testing.assert_close(sums, plain, rtol=0, atol=1e-5)
    assert counts.tolist() == (batch["labels"][:, 1:] != -100).sum(-1).tolist()


def test_chunked_log_probs_under_bf16_autocast_stay_close_to_the_plain_path():
    """Half-precision matmuls round differently in chunks than in one product: close, not equal."""
    torch.manual_seed(0)
    handle = models.build(SPEC, models.LoraSpec(), models.PrecisionSpec("bf16-mixed"))
    (_, plain_loss, _), (_, loss, _) = plain_and_chunked(handle, right_padded_batch(), autocast=True)
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=2e-2)


def test_an_output_layer_that_is_not_a_plain_linear_takes_the_plain_path():
    handle = models.build(SPEC, models.LoraSpec(target_modules=["q_proj", "lm_head"]), models.PrecisionSpec("32-true"))
    assert chunkable_head(handle.model) is None
    nll, n = supervised_nll_sum(handle.model, right_padded_batch())
    plain_nll, plain_n = sft_loss_sum(*supervised_logits(handle.model, right_padded_batch()))
    assert int(n) == int(plain_n)
    torch.testing.assert_close(nll, plain_nll, rtol=0, atol=1e-5)


def test_compiled_layers_give_the_eager_loss_and_gradients():
    """`model.compile=true`: every decoder layer compiled (inductor, dynamic shapes), same numbers to 1e-5
    in fp32, on two batch widths (the second must reuse the dynamic graph, not fail)."""
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        handle = models.build(models.ModelSpec("llmft:tiny", compile=compiled), models.LoraSpec(),
                              models.PrecisionSpec("32-true"))
        layers = handle.model.get_decoder().layers
        assert [layer._compiled_call_impl is not None for layer in layers] == [compiled] * len(layers)
        runs = []
        for batch in (right_padded_batch(), {k: v[:, :9] for k, v in right_padded_batch().items()}):
            handle.model.zero_grad(set_to_none=True)
            nll, n = supervised_nll_sum(handle.model, batch)
            (nll / n).backward()
            runs.append(((nll / n).detach(), {k: p.grad.clone() for k, p in handle.trainable_parameters().items()}))
        results.append(runs)
    for (eager_loss, eager_grads), (loss, grads) in zip(*results):
        torch.testing.assert_close(loss, eager_loss, rtol=0, atol=1e-5)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, eager_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_chunked_log_probs_per_row_on_the_plain_logits_path(monkeypatch):
    """`logits_to_keep` (a head that cannot be chunked): per-row sums equal the chunked path's."""
    from llmft.models import forward

    torch.manual_seed(0)
    handle = models.build(SPEC, models.LoraSpec(), models.PrecisionSpec("32-true"))
    batch = right_padded_batch()
    with torch.no_grad():
        chunked = sequence_logp_sums(handle.model, batch)
        monkeypatch.setattr(forward, "chunkable_head", lambda model: None)
        plain = sequence_logp_sums(handle.model, batch)
    torch.testing.assert_close(plain[0], chunked[0], rtol=0, atol=1e-5)
    assert plain[1].tolist() == chunked[1].tolist()


@pytest.mark.parametrize("peft", [models.LoraSpec(), models.FullSpec()], ids=["lora", "full"])
def test_chunked_gradients_under_bf16_autocast_stay_close_to_the_plain_path(peft):
    """Half-precision matmuls in chunks round otherwise than in one product: each gradient within 3% of
    the plain autocast path's (relative to its norm), the loss within 2e-2."""
    torch.manual_seed(0)
    handle = models.build(SPEC, peft, models.PrecisionSpec("bf16-mixed"))
    (_, plain_loss, plain_grads), (_, loss, grads) = plain_and_chunked(handle, right_padded_batch(), autocast=True)
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=2e-2)
    for name, grad in grads.items():
        reference = plain_grads[name].float()
        assert float((grad.float() - reference).norm()) <= 0.03 * float(reference.norm()) + 1e-8, name
