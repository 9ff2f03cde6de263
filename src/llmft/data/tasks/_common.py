"""Helpers shared by the task modules: the seeded RNGs, the example type, answer normalisation.

Every task module defines ``generate(rng, split) -> Example`` and ``verify(prediction, answer)
-> bool``, plus its ``CASE_RULE`` and ``MAX_NEW_TOKENS``. Only ``policy`` reads the split in
its generator (its request phrasings are drawn from a per-split pool); ``tool_call`` uses it to
seed the draw of malformed rejected calls.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

SEED = 20240611


def rng(task: str, split: str, salt: str = "") -> random.Random:
    """A ``random.Random`` determined by :data:`SEED`, the task, the split and ``salt``."""
    digest = hashlib.sha256(f"{SEED}:{task}:{split}:{salt}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


@dataclass(frozen=True)
class Example:
    """What a task generator returns: the prompt, the reference and one plausible wrong reply."""

    prompt: list  # messages before the final assistant turn (earlier assistant turns included)
    final: dict  # the evaluated assistant message
    rejected: dict  # a plausible wrong assistant message
    tools: list | None = None
    extra: dict | None = None  # extra top-level fields of the chat row (policy: refusal)


_WS = re.compile(r"\s+")


def norm(text: str) -> str:
    """Whitespace collapsed to single spaces and stripped."""
    return _WS.sub(" ", text).strip()


def short_answer(text: str, *, fold_case: bool) -> str:
    """A one-value answer for comparison: whitespace collapsed, one trailing period dropped,
    case folded if the task's case rule says so."""
    text = norm(text)
    if text.endswith("."):
        text = text[:-1].rstrip()
    return text.casefold() if fold_case else text


def same_short_answer(prediction: str, answer: str, *, fold_case: bool) -> bool:
    return short_answer(prediction, fold_case=fold_case) == short_answer(answer, fold_case=fold_case)
