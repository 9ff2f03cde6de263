"""What a run leaves behind is readable, portable and says exactly what it ran on."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from llmft import models
from llmft.models import embedded, provenance
from llmft.train import run

FAST = ("model=tiny", "precision=fp32", "trainer.max_steps=2", "data.limit_train=8", "data.batch_size=4")
INPUT = torch.tensor([[1, 20, 300, 4000, 5, 60, 7, 80]])


def text_files(folder: Path) -> dict[Path, str]:
    return {p: p.read_text(errors="ignore") for p in folder.rglob("*")
            if p.is_file() and p.suffix in (".json", ".md", ".jinja", ".txt", ".yaml")}


def ordinary_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_run_card_and_results_are_portable_and_readable(make_cfg, tmp_path):
    result = run(make_cfg(*FAST, "evaluation.limit=1", "evaluation.max_new_tokens=2"))
    card = json.loads((tmp_path / "run_card.json").read_text())
    for name in ("run_card.json", "eval.json"):  # used to be 0600 (mkstemp)
        assert (tmp_path / name).stat().st_mode & 0o777 == ordinary_mode(), name
    # data files relative to the checkout (used to be absolute paths of this machine), hashes kept
    assert set(card["data_files"]) == {"src/llmft/data/bundled/chat_train.jsonl", "src/llmft/data/bundled/chat_val.jsonl"}
    assert all(len(h) == 64 for h in card["data_files"].values())
    assert card["torch"] == {"num_threads": torch.get_num_threads(), "num_interop_threads": torch.get_num_interop_threads(),
                             "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    assert card["base_model"]["id"] == "llmft:tiny"
    assert card["base_model"]["weights_sha256"] == provenance.weights_sha256(embedded.resolve("llmft:tiny"))
    assert result["card"] == card


@pytest.mark.parametrize("peft", ["lora", "full"])
def test_saved_model_names_its_base_portably(make_cfg, tmp_path, peft):
    result = run(make_cfg(*FAST, f"peft={peft}", "evaluate=false"))
    saved = tmp_path / "checkpoints" / ("adapter" if peft == "lora" else "model")
    local = [str(embedded.cache_root()), str(Path.home()), str(tmp_path)]
    for path, text in text_files(saved).items():  # the adapter config used to name the local cache folder
        assert not any(folder in text for folder in local), (path.name, [f for f in local if f in text])
    card = provenance.read_card(saved)
    assert card["llmft_base"] == "llmft:tiny"
    assert card["base_weights_sha256"] == result["card"]["base_model"]["weights_sha256"]
    if peft == "lora":
        config = json.loads((saved / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "llmft:tiny"


def test_a_plain_peft_client_loads_the_adapter_on_the_recorded_base(make_cfg, tmp_path):
    result = run(make_cfg(*FAST, "evaluate=false", "optim.lr=1e-2"))
    adapter = tmp_path / "checkpoints" / "adapter"
    base_id = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    # what the adapter's README tells a user to do: resolve llmft's id to its local copy, then plain peft
    base = AutoModelForCausalLM.from_pretrained(embedded.resolve(base_id), dtype=torch.float32)
    client = PeftModel.from_pretrained(base, adapter).eval()
    ours = result["handle"].model.eval()
    with torch.no_grad():
        expected, got = ours(input_ids=INPUT).logits, client(input_ids=INPUT).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)  # fp32: the same weights, the same kernels
    with client.disable_adapter(), torch.no_grad():
        assert not torch.allclose(client(input_ids=INPUT).logits, expected, atol=1e-4)  # the adapter matters


def test_loading_a_run_on_a_base_with_other_weights_warns(make_cfg, tmp_path, caplog):
    run(make_cfg(*FAST, "evaluate=false"))
    adapter = tmp_path / "checkpoints" / "adapter"
    readme = adapter / "README.md"
    sha = provenance.read_card(adapter)["base_weights_sha256"]
    spec, peft, fp32 = models.ModelSpec("llmft:tiny"), models.LoraSpec(), models.PrecisionSpec("32-true")

    def warnings() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="llmft.models.provenance"):
            models.load_finished(adapter, spec, peft, fp32)
        return [r.getMessage() for r in caplog.records if r.name == "llmft.models.provenance"]

    assert warnings() == []
    readme.write_text(readme.read_text().replace(sha, "0" * 64))
    [message] = warnings()
    assert "llmft:tiny" in message and "000000000000" in message
