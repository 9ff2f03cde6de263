"""OmegaConf resolvers the configs use (registered by train.py before Hydra composes, and by tests;
Hydra carries them into SLURM jobs with its global state)."""
from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from llmft.constants import OBJECTIVE_DIRECTIONS


def if_set(value: Any, then: Any, otherwise: Any) -> Any:
    """`${llmft.if_set:${resume},a,b}`: a when the value is set (not null or empty), else b."""
    return then if value not in (None, "") else otherwise


def direction(objective: str | None) -> str:
    """`${llmft.direction:${objective}}`: minimize or maximize, as the objective needs (a sweeper's direction)."""
    if objective not in OBJECTIVE_DIRECTIONS:
        raise ValueError(f"objective={objective}: a sweeper needs one of {sorted(OBJECTIVE_DIRECTIONS)}")
    return OBJECTIVE_DIRECTIONS[objective]


def short_number(value: Any) -> str:
    """`${llmft.short:${optim.lr}}`: a number in 3 significant digits for folder names (0.000561 for
    0.0005611516415334506); anything else as it is."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def register() -> None:
    for name, fn in {"llmft.if_set": if_set, "llmft.direction": direction, "llmft.short": short_number}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
