"""Scalar heads over a causal LM's final hidden states: the reward model's score head (and, next,
PPO's value head). Built and saved by models/; methods receive the module and train it."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

HEAD_FILES = {"score": "score_head.safetensors", "value": "value_head.safetensors"}


class ScalarHead(torch.nn.Module):
    """Linear(hidden_size -> 1), initialised N(0, 1/(hidden_size + 1)) as in Ziegler et al. 2019.

    The score head has no bias: the Bradley-Terry loss sees only score differences, so a bias would
    get no gradient (as in transformers' sequence-classification heads); a value head has one."""

    def __init__(self, hidden_size: int, bias: bool = True):
        super().__init__()
        self.proj = torch.nn.Linear(hidden_size, 1, bias=bias)
        torch.nn.init.normal_(self.proj.weight, std=1.0 / math.sqrt(hidden_size + 1))
        if bias:
            torch.nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden.to(self.proj.weight.dtype)).squeeze(-1)


def build_head(kind: str | None, hidden_size: int) -> ScalarHead | None:
    if kind is None:
        return None
    if kind not in HEAD_FILES:
        raise ValueError(f"head={kind!r}: choose one of {sorted(HEAD_FILES)}")
    return ScalarHead(hidden_size, bias=kind == "value")


def save_head(head: ScalarHead, kind: str, folder: Path) -> Path:
    path = Path(folder) / HEAD_FILES[kind]
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(path))
    return path


def load_head(kind: str, folder: Path, hidden_size: int) -> ScalarHead:
    head = build_head(kind, hidden_size)
    head.load_state_dict(load_file(str(Path(folder) / HEAD_FILES[kind])))
    return head
