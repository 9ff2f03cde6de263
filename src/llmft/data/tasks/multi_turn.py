"""``multi_turn``: recall an item the user stated earlier in the chat.

Case rule: folded, a recalled value (a fruit, a colour, a name, a seat like ``12A``) is the
same value in any case (``Mango`` == ``mango``). The rejected reply is the other stated value.
"""

from __future__ import annotations

import random
from typing import Callable

from llmft.data.tasks._common import Example, msg, same_short_answer
from llmft.data.tasks.tool_call import CITIES
from llmft.data.tasks.word_list import WORDS

CASE_RULE = "folded: a recalled value (a fruit, a colour, a name, a seat like 12A)"
MAX_NEW_TOKENS = 12

COLOURS = ["teal", "red", "blue", "green", "purple", "orange", "yellow", "pink", "black", "white"]
PET_NAMES = ["Max", "Luna", "Bella", "Milo", "Coco", "Rocky", "Daisy", "Oscar", "Nala", "Toby"]
FRIEND_NAMES = ["Sarah", "Tom", "Lucy", "Omar", "Nina", "Pedro", "Yuki", "Ravi", "Elena", "Jonas"]
FRUITS = ["mango", "banana", "cherry", "peach", "kiwi", "plum", "grape", "pear", "melon", "lime"]

# (statement "my X is V", question "What is my X?", value generator)
_FACT_KINDS: dict[str, Callable[[random.Random], str]] = {
    "locker number": lambda r: str(r.randint(10, 99)),
    "favourite colour": lambda r: r.choice(COLOURS),
    "dog's name": lambda r: r.choice(PET_NAMES),
    "home city": lambda r: r.choice(CITIES),
    "room number": lambda r: str(r.randint(100, 499)),
    "best friend's name": lambda r: r.choice(FRIEND_NAMES),
    "favourite fruit": lambda r: r.choice(FRUITS),
    "lucky number": lambda r: str(r.randint(1, 9)),
    "seat number": lambda r: f"{r.randint(1, 30)}{r.choice('ABCDEF')}",
}


def _filler_turn(r: random.Random) -> tuple[str, str]:
    kind = r.randrange(3)
    if kind == 0:
        a, b = r.randint(1, 9), r.randint(1, 9)
        return f"What is {a} + {b}?", str(a + b)
    if kind == 1:
        word = r.choice(WORDS)
        return f"Spell {word} in capital letters.", word.upper()
    city = r.choice(["Paris", "Rome", "Tokyo", "Berlin", "Madrid", "Cairo", "Lima", "Oslo"])
    country = {"Paris": "France", "Rome": "Italy", "Tokyo": "Japan", "Berlin": "Germany",
               "Madrid": "Spain", "Cairo": "Egypt", "Lima": "Peru", "Oslo": "Norway"}[city]
    return f"Which country is {city} in?", country


def generate(r: random.Random, split: str) -> Example:
    k1, k2 = r.sample(list(_FACT_KINDS), 2)
    v1 = _FACT_KINDS[k1](r)
    v2 = _FACT_KINDS[k2](r)
    while v2.casefold() == v1.casefold():  # the verifier folds case
        v2 = _FACT_KINDS[k2](r)
    opener = r.choice([
        "My {k1} is {v1} and my {k2} is {v2}. Please remember them.",
        "Remember this: my {k1} is {v1}, and my {k2} is {v2}.",
        "Note that my {k1} is {v1} and my {k2} is {v2}.",
    ]).format(k1=k1, v1=v1, k2=k2, v2=v2)
    prompt = [msg("user", opener), msg("assistant", "Noted.")]
    if r.random() < 0.5:
        q, a = _filler_turn(r)
        prompt += [msg("user", q), msg("assistant", a)]
    asked, value, other = (k1, v1, v2) if r.random() < 0.5 else (k2, v2, v1)
    question = r.choice(["What is my {k}?", "Remind me, what is my {k}?", "What did I say my {k} is?"])
    prompt.append(msg("user", question.format(k=asked)))
    return Example(
        prompt=prompt,
        final=msg("assistant", value),
        rejected=msg("assistant", other),
    )


def verify(prediction: str, answer: str) -> bool:
    """The recalled value, case folded (``Mango`` recalls ``mango``)."""
    return same_short_answer(prediction, answer, fold_case=True)
