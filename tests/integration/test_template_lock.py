"""The template lock: eval.py renders a run's prompts with the template it trained with, or refuses
(unless forced), on a real finished tiny run trained with a named template."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from llmft import evaluate
from llmft.data.templates import TemplateLockError
from tests.conftest import compose_config

# one step on 4 rows, no evaluation while training; evaluation scores 1 example of 1 task, 1 new token
TRAIN = ["model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=1", "data.limit_train=4",
         "data.batch_size=4", "data.chat_template=chatml"]
EVAL = ["evaluation.limit=1", "evaluation.max_new_tokens=1", "evaluation.tasks=[arithmetic]"]


@pytest.fixture(scope="module")
def chatml_run(tmp_path_factory) -> Path:
    """A finished run trained with data.chat_template=chatml (folder as `python train.py` leaves it)."""
    from llmft.train import run

    folder = tmp_path_factory.mktemp("lock") / "run"
    cfg = compose_config("train", TRAIN, folder)
    run(cfg)
    (folder / ".hydra").mkdir()  # what Hydra writes for `python train.py`
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    return folder


def evaluate_run(run: Path, out: Path, *overrides: str) -> dict:
    cfg = compose_config("eval", [f"run_dir={run}", *EVAL, *overrides], out)
    return evaluate.run(cfg)


def trained_hash(run: Path) -> str:
    return json.loads((run / "run_card.json").read_text())["chat_template_sha256"]


def test_the_runs_own_template_evaluates(chatml_run, tmp_path):
    reports = evaluate_run(chatml_run, tmp_path)
    assert reports["tuned"]["n_examples"] == 1
    card = json.loads((tmp_path / "eval_card.json").read_text())
    assert card["chat_template"] == {"sha256": trained_hash(chatml_run), "run_sha256": trained_hash(chatml_run),
                                     "forced": False}
    assert trained_hash(chatml_run) != _tokenizer_hash()  # the run's chatml, not the tokenizer's


def test_another_template_is_refused_naming_both_hashes_the_run_and_the_way_out(chatml_run, tmp_path):
    with pytest.raises(TemplateLockError) as err:
        evaluate_run(chatml_run, tmp_path, "chat_template=tokenizer")
    message = str(err.value)
    assert f"run_dir={chatml_run}" in message
    assert trained_hash(chatml_run) in message and _tokenizer_hash() in message
    assert "force_template=true" in message
    assert not (tmp_path / "eval.json").exists()  # refused before evaluating anything


def test_forced_evaluates_and_records_both_hashes(chatml_run, tmp_path):
    reports = evaluate_run(chatml_run, tmp_path, "chat_template=tokenizer", "force_template=true")
    assert reports["tuned"]["n_examples"] == 1 and (tmp_path / "eval.json").is_file()
    card = json.loads((tmp_path / "eval_card.json").read_text())
    assert card["chat_template"] == {"sha256": _tokenizer_hash(), "run_sha256": trained_hash(chatml_run),
                                     "forced": True}
    predictions = (tmp_path / "eval_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 2  # base and tuned, 1 example each


def _tokenizer_hash() -> str:
    from llmft.data.templates import ChatRenderer
    from llmft.models.factory import ModelSpec, load_tokenizer

    return ChatRenderer(load_tokenizer(ModelSpec("llmft:smollm2-135m-instruct")), 512).template_hash


def test_a_missing_template_file_names_eval_pys_option(chatml_run, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^chat_template=.*nope.jinja: neither a bundled template"):
        evaluate_run(chatml_run, tmp_path, f"chat_template={tmp_path / 'nope.jinja'}")
