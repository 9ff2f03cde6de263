"""The tasks by name: their generators, verifiers, case rules and generation budgets.

Verifiers (:func:`verify`) collapse whitespace and ignore one trailing period; case is decided
per task (:data:`CASE_RULES`):

==============  ================================================================================
``tool_call``   exact: the JSON arguments are data, strings compared case-sensitively (numbers
                numerically); ``{"city": "paris"}`` is wrong for ``Paris``
``arithmetic``  none: the answer is a number
``word_list``   folded: the words are common lowercase words (``Stone`` == ``stone``)
``multi_turn``  folded: a recalled value (a fruit, a colour, a name, a seat like ``12A``) is the
                same value in any case (``Mango`` == ``mango``)
``policy``      the refusal folds case and curly apostrophes; a fact value (a Wi-Fi password
                like ``maple42``, a phone number) is exact (``Maple42`` is wrong)
==============  ================================================================================
"""

from __future__ import annotations

import random
from types import ModuleType
from typing import Callable

from llmft.data.tasks import arithmetic, gsm8k, multi_turn, policy, tool_call, word_list
from llmft.data.tasks._common import Example

# In generation order (the order also fixes each task's rows in the dedup).
_MODULES: dict[str, ModuleType] = {
    "tool_call": tool_call,
    "arithmetic": arithmetic,
    "word_list": word_list,
    "multi_turn": multi_turn,
    "policy": policy,
}

TASK_NAMES: tuple[str, ...] = tuple(_MODULES)

# Every generator is called as ``gen(rng, split)``.
Generator = Callable[[random.Random, str], Example]
GENERATORS: dict[str, Generator] = {name: m.generate for name, m in _MODULES.items()}

VERIFIERS: dict[str, Callable[[str, str], bool]] = {name: m.verify for name, m in _MODULES.items()}

# How each verifier treats letter case (the table above).
CASE_RULES: dict[str, str] = {name: m.CASE_RULE for name, m in _MODULES.items()}

# Generation budget per task (tokens): the longest reference answer plus a margin (tool calls are
# JSON, the rest a few words), so evaluation does not pay for rambling past any correct answer.
MAX_NEW_TOKENS: dict[str, int] = {name: m.MAX_NEW_TOKENS for name, m in _MODULES.items()}

# Verifiers of public datasets' tasks (rows tagged by data/layouts.py): `verify` and `reward=verifier`
# accept them, but they are not suite tasks (no generator; evaluation iterates TASK_NAMES only).
EXTRA_VERIFIERS: dict[str, Callable[[str, str], bool]] = {"gsm8k": gsm8k.verify}
VERIFIABLE_TASKS: tuple[str, ...] = TASK_NAMES + tuple(EXTRA_VERIFIERS)


def verify(task: str, prediction: str, answer: str) -> bool:
    """True iff ``prediction`` (the model's final assistant text) is correct for ``answer``."""
    fn = VERIFIERS.get(task) or EXTRA_VERIFIERS.get(task)
    if fn is None:
        raise KeyError(f"unknown task {task!r}; known tasks: {', '.join(VERIFIABLE_TASKS)}")
    return bool(fn(prediction or "", answer))
