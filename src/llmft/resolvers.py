"""OmegaConf resolvers the configs use (registered by train.py before Hydra composes, and by tests)."""
from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def if_set(value: Any, then: Any, otherwise: Any) -> Any:
    """`${llmft.if_set:${resume},a,b}`: a when the value is set (not null or empty), else b."""
    return then if value not in (None, "") else otherwise


def register() -> None:
    if not OmegaConf.has_resolver("llmft.if_set"):
        OmegaConf.register_new_resolver("llmft.if_set", if_set)
