"""Shared fixtures: configs composed with Hydra's compose API (as in lightning-hydra-template)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from llmft.resolvers import register

register()  # the resolvers conf/ uses, as train.py registers them

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def compose_config(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python <name>.py <overrides>` would run with, writing into output_dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides: str, name: str = "train") -> DictConfig:
        return compose_config(name, list(overrides), tmp_path)

    return make


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2 tokenizer (converted from the embedded GGUF once per machine)."""
    from llmft.models.factory import ModelSpec, load_tokenizer

    return load_tokenizer(ModelSpec("llmft:smollm2-135m-instruct"))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA: no GPU on this machine")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
