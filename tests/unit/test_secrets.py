"""Secret redaction of what the loggers see (llmft.loggers.redaction)."""
from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

from llmft.loggers.redaction import (REDACTED, env_secrets, is_secret_name, public_card, public_config,
                                     redact_command, redacted_argv)

SERVICE_TOKEN = "svc-0123456789abcdef"
HF_TOKEN = "hf_abcdefghijklmnopqrstu"


@pytest.mark.parametrize("name", ["hf_token", "HF_TOKEN", "api_key", "apiKey", "WANDB_API_KEY", "password",
                                  "AWS_SECRET_ACCESS_KEY", "db.password", "client_secret", "MY_SERVICE_TOKEN"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["max_new_tokens", "tokenizer", "loss_aggregation", "TOKENIZERS_PARALLELISM",
                                  "key_padding", "WANDB_IDENTITY_TOKEN_FILE", "monkey", "author", "lr"])
def test_ordinary_names(name):
    assert not is_secret_name(name)


def test_env_secrets_are_the_long_values_of_secret_names():
    env = {"HF_TOKEN": HF_TOKEN, "MY_SERVICE_TOKEN": SERVICE_TOKEN, "SHORT_KEY": "1", "HOME": "/home/someone/x"}
    assert env_secrets(env) == [HF_TOKEN, SERVICE_TOKEN]  # longest first


def test_public_config_redacts_secret_keys_and_secret_values(make_cfg, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", SERVICE_TOKEN)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    cfg = make_cfg("logger=wandb", "+service.api_key=literal-value", "+service.password=null",
                   "+service.url=https://user:${oc.env:MY_SERVICE_TOKEN}@example.com",
                   "+service.headers=[Bearer ${oc.env:HF_TOKEN}]", "+hf_token=${oc.env:HF_TOKEN}")
    public = public_config(cfg)
    assert public["service"] == {"api_key": REDACTED, "password": None,  # null stays: it reveals nothing
                                 "url": f"https://user:{REDACTED}@example.com", "headers": [f"Bearer {REDACTED}"]}
    assert public["hf_token"] == REDACTED
    assert SERVICE_TOKEN not in str(public) and HF_TOKEN not in str(public)
    # everything else is the resolved config, untouched
    expected = OmegaConf.to_container(cfg, resolve=True)
    for key in ("service", "hf_token"):
        del expected[key], public[key]
    assert public == expected
    assert public["logger"]["wandb"]["tags"] == ["sft", "lora", "smollm2_135m"]
    assert public["evaluation"]["max_new_tokens"] == cfg.evaluation.max_new_tokens


def test_the_command_line_of_the_run_card(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    card = {"command": f"python train.py +db.password=hunter2xyz optim.lr=0.001 'note=uses {HF_TOKEN}'",
            "data_files": {f"/data/{HF_TOKEN}/train.jsonl": "sha"}, "seed": 1}
    public = public_card(card)
    assert public["command"] == f"python train.py '+db.password={REDACTED}' optim.lr=0.001 'note=uses {REDACTED}'"
    assert public["data_files"] == {f"/data/{REDACTED}/train.jsonl": "sha"} and public["seed"] == 1
    assert card["seed"] == 1 and HF_TOKEN in card["command"]  # the input is not changed
    assert redact_command("python train.py 'unbalanced") == "python train.py 'unbalanced"


def test_redacted_argv_is_restored(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setattr(sys, "argv", ["train.py", "+api_key=abc12345", f"x={HF_TOKEN}", "lr=1"])
    with redacted_argv():
        assert sys.argv == ["train.py", f"+api_key={REDACTED}", f"x={REDACTED}", "lr=1"]
    assert sys.argv == ["train.py", "+api_key=abc12345", f"x={HF_TOKEN}", "lr=1"]
