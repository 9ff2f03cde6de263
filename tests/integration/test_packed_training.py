"""Packing on the tiny model (fp32): a packed window computes what the unpacked one does, and a packed
document sees nothing of the others (including transformers' use_cache trap)."""
from __future__ import annotations

import csv
import importlib.util
from functools import partial

import pytest
import torch

from llmft import models
from llmft.data.collate import WindowCollator
from llmft.data.encoders import encode_rows
from llmft.data.packing import PackedWindowCollator, pack_rows
from llmft.data.rows import DataSpec, load_rows
from llmft.data.templates import ChatRenderer
from llmft.losses import dpo_loss, orpo_loss
from llmft.methods.preference import DPO, ORPO
from llmft.methods.sft import SFT
from llmft.models.forward import document_logp_sums, model_inputs, packed_for
from llmft.train import run

MAX_LENGTH = 256
FP32 = models.PrecisionSpec(trainer="32-true")


def tiny(with_reference: bool = False) -> models.ModelHandle:
    torch.manual_seed(0)
    return models.build(models.ModelSpec("llmft:tiny"), models.FullSpec(), FP32, with_reference=with_reference)


def examples(view: str, handle, n: int) -> list[dict]:
    rows = load_rows(DataSpec(limit_train=n, val_fraction=0.0, dedup="none", contamination="off"), view, 0).train
    encoded, _ = encode_rows(rows, ChatRenderer(handle.tokenizer, MAX_LENGTH), view)
    return encoded


def window_loss_and_grads(method, window: list[dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """What `ObjectiveModule.training_step` back-propagates: sum of loss_sum / sum of normaliser."""
    method.zero_grad(set_to_none=True)
    total = sum(method.normaliser(micro) for micro in window)
    loss = torch.zeros(())
    for micro in window:
        loss_sum, _, _ = method.loss_sum(micro)
        (loss_sum / total).backward()
        loss += loss_sum.detach() / total
    grads = {name: p.grad.clone() for name, p in method.named_parameters() if p.requires_grad}
    return loss, grads


def assert_same_window(method, window: list[dict], batch_size: int, pad: int, view: str) -> tuple[int, int]:
    unpacked = WindowCollator(batch_size, pad)(window)
    packed = PackedWindowCollator(batch_size, pad, MAX_LENGTH, view)(window)
    loss_u, grads_u = window_loss_and_grads(method, unpacked)
    loss_p, grads_p = window_loss_and_grads(method, packed)
    assert torch.isfinite(loss_u) and loss_u > 0
    torch.testing.assert_close(loss_p, loss_u, atol=1e-5, rtol=0)
    assert grads_u.keys() == grads_p.keys() and grads_u
    for name, grad in grads_u.items():
        assert grad.abs().max() > 0, name  # every trainable parameter takes part in the comparison
        torch.testing.assert_close(grads_p[name], grad, atol=1e-5, rtol=0, msg=name)
    return len(unpacked), len(packed)


def test_sft_packed_window_has_the_loss_and_gradients_of_the_unpacked_one():
    handle = tiny()
    window = examples("chat", handle, 12)
    method = SFT(handle, optimizer=partial(torch.optim.SGD, lr=0.1))
    n_unpacked, n_packed = assert_same_window(method, window, 3, handle.tokenizer.pad_token_id, "chat")
    assert n_packed < n_unpacked  # the documents really were packed, several to a row


@pytest.mark.parametrize("name", ["dpo", "orpo"])
def test_preference_packed_window_has_the_loss_and_gradients_of_the_unpacked_one(name):
    handle = tiny(with_reference=name == "dpo")
    with torch.no_grad():  # a policy away from its reference: DPO's rewards and margins are not all 0
        for p in handle.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    cls, loss = {"dpo": (DPO, dpo_loss), "orpo": (ORPO, orpo_loss)}[name]
    method = cls(handle, optimizer=partial(torch.optim.SGD, lr=0.1), loss=loss, beta=0.1)
    window = examples("pair", handle, 8)
    n_unpacked, n_packed = assert_same_window(method, window, 2, handle.tokenizer.pad_token_id, "pair")
    assert n_packed < n_unpacked


def document_logits(model, batch: dict, row: int, start: int, length: int) -> torch.Tensor:
    return model(**model_inputs(model, batch)).logits[row, start : start + length]


@torch.no_grad()
def test_a_packed_document_sees_nothing_of_the_others_and_the_use_cache_trap():
    handle = tiny()
    model, pad = handle.model.eval(), handle.tokenizer.pad_token_id
    a, b1, b2 = examples("chat", handle, 3)
    assert b1["input_ids"] != b2["input_ids"] and len(b1["input_ids"]) != len(b2["input_ids"])
    n = len(a["input_ids"])
    alone = model(input_ids=torch.tensor([a["input_ids"]])).logits[0]
    # A after B1, after B2, before B1, and next to a row holding other documents
    batch = pack_rows([[b1, a], [b2, a], [a, b1], [b2]], "chat", pad)
    logits = model(**model_inputs(model, batch)).logits
    after_b1 = logits[0, len(b1["input_ids"]):][:n]
    after_b2 = logits[1, len(b2["input_ids"]):][:n]
    torch.testing.assert_close(after_b1, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(after_b2, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[2, :n], alone, atol=1e-5, rtol=0)

    # The trap: the same position ids with transformers' default use_cache (True for Llama) make a KV
    # cache first, which switches the packed-sequence detection off: A then attends to B1.
    trapped = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    leak = (trapped[0, len(b1["input_ids"]):][:n] - alone).abs().max().item()
    assert leak > 1e-2, leak
    # ...and a 2-D attention mask does the same (so the packed forward gives none)
    masked = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   attention_mask=batch["attention_mask"], use_cache=False).logits
    assert (masked[0, len(b1["input_ids"]):][:n] - alone).abs().max().item() > 1e-2


def logged_losses(folder) -> list[float]:
    with open(folder / "metrics.csv") as handle:
        return [float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")]


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_train_py_runs_packed_with_the_unpacked_run_s_steps_and_losses(make_cfg, tmp_path, method):
    results = {}
    for packing in (False, True):
        cfg = make_cfg("model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=2", "data.limit_train=8",
                       "data.batch_size=2", "trainer.accumulate_grad_batches=2", f"method={method}",
                       f"data.packing={str(packing).lower()}", "data.max_length=256")
        cfg.paths.output_dir = str(tmp_path / f"packing_{packing}")
        results[packing] = run(cfg), logged_losses(tmp_path / f"packing_{packing}")
    (unpacked, losses_u), (packed, losses_p) = results[False], results[True]
    assert packed["card"]["optimizer_steps"] == unpacked["card"]["optimizer_steps"] == 2
    assert losses_p[0] == pytest.approx(losses_u[0], abs=1e-5)  # same first window, same weights
    assert losses_p[1] == pytest.approx(losses_u[1], abs=1e-4)
    padding = packed["card"]["padding_fraction"]
    assert padding["training"] == "packed" and unpacked["card"]["padding_fraction"]["training"] == "unpacked"
    assert padding["packed"] < padding["unpacked"]


@torch.no_grad()
def test_the_flattened_layout_flash_attention_gets_gives_the_same_document_sums(monkeypatch):
    """Under flash-attention the packed rows become one row of real tokens (`packed_for`). Its bookkeeping
    (labels, positions, document ids) is checked here on the CPU: sdpa isolates documents in one row too."""
    from llmft.models import forward

    handle = tiny()
    model = handle.model.eval()
    window = examples("pair", handle, 4)
    batch = PackedWindowCollator(2, handle.tokenizer.pad_token_id, MAX_LENGTH, "pair")(window)[0]
    rows_sums, rows_counts = document_logp_sums(model, batch)
    monkeypatch.setattr(forward, "uses_flash_attention", lambda model: True)
    flat = packed_for(model, batch)
    assert flat["input_ids"].shape == (1, int(batch["attention_mask"].sum()))
    flat_sums, flat_counts = document_logp_sums(model, batch)
    assert torch.equal(flat_counts, rows_counts)
    torch.testing.assert_close(flat_sums, rows_sums, atol=1e-4, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="flash-attn is not installed")
@torch.no_grad()
def test_flash_attention_varlen_path_isolates_packed_documents():
    """flash_attention_2 takes the varlen path from position ids only for one row: the packed forward
    flattens the micro-batch (`packed_for`), and a document's logits match it alone (bf16 tolerance)."""
    spec = models.ModelSpec("llmft:tiny", attn_implementation="flash_attention_2")
    handle = models.build(spec, models.FullSpec(), models.PrecisionSpec(trainer="bf16-true", weights_dtype="bfloat16"))
    model = handle.model.cuda().eval()
    a, b1, b2 = examples("chat", handle, 3)
    batch = {k: v.cuda() if torch.is_tensor(v) else v
             for k, v in pack_rows([[b1, a], [b2]], "chat", handle.tokenizer.pad_token_id).items()}
    sums, counts = document_logp_sums(model, batch)
    alone = {k: v.cuda() if torch.is_tensor(v) else v for k, v in pack_rows([[a]], "chat", 0).items()}
    sum_alone, count_alone = document_logp_sums(model, alone)
    assert counts[1] == count_alone[0]
    assert sums[1].item() == pytest.approx(sum_alone[0].item(), rel=2e-2)
    # the same batch without flattening (two rows: transformers' varlen detection is off) leaks B1 into A
    logits = model(**model_inputs(model, batch)).logits
    start, n = len(b1["input_ids"]), len(a["input_ids"])
    leaked = logits[0, start : start + n].float()
    reference = model(input_ids=alone["input_ids"]).logits[0].float()
    assert (leaked - reference).abs().max() > 0.1


def test_the_plain_logits_path_groups_documents_as_the_chunked_one(monkeypatch):
    """A model whose output layer cannot be chunked (`chunkable_head` None) takes `logits_to_keep`; its
    per-document sums (doc_ids through the kept columns) equal the chunked path's, pairs packed."""
    from llmft.models import forward

    handle = tiny()
    model = handle.model.eval()
    batch = PackedWindowCollator(2, handle.tokenizer.pad_token_id, MAX_LENGTH, "pair")(examples("pair", handle, 4))[0]
    with torch.no_grad():
        chunked = document_logp_sums(model, batch)
        monkeypatch.setattr(forward, "chunkable_head", lambda model: None)
        plain = document_logp_sums(model, batch)
    torch.testing.assert_close(plain[0], chunked[0], rtol=0, atol=1e-5)
    assert plain[1].tolist() == chunked[1].tolist() and int(chunked[1].min()) > 0
