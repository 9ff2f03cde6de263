"""``word_list``: reverse or alphabetically sort 3-5 common words.

Case rule: folded, the words are common lowercase words (``Stone`` == ``stone``). The rejected
reply is the words as given or the target with one adjacent pair swapped.
"""

from __future__ import annotations

import random

from llmft.data.tasks._common import Example, msg, norm, short_answer

CASE_RULE = "folded: the words are common lowercase words"
MAX_NEW_TOKENS = 24

WORDS = [
    "apple", "bread", "chair", "dog", "eagle", "fish", "garden", "house", "island", "jacket",
    "kite", "lemon", "mountain", "night", "orange", "pencil", "queen", "river", "stone", "table",
    "umbrella", "village", "window", "yellow", "zebra", "bottle", "cloud", "dream", "forest",
    "green", "horse", "music", "paper", "rabbit", "summer", "train", "water", "winter", "candle",
    "letter", "mirror", "planet", "silver", "tiger", "flower", "basket", "doctor", "ocean",
]


def generate(r: random.Random, split: str) -> Example:
    n = r.randint(3, 5)
    while True:
        words = r.sample(WORDS, n)
        if words != sorted(words) and words != sorted(words, reverse=True):
            break
    given = ", ".join(words)
    if r.random() < 0.5:
        question = f"Reverse the order of these words: {given}. Answer with the words only."
        target = list(reversed(words))
    else:
        question = f"Sort these words alphabetically: {given}. Answer with the words only."
        target = sorted(words)
    # Wrong order: either the words as given or one adjacent pair swapped.
    if r.random() < 0.5:
        wrong = list(words)
    else:
        wrong = list(target)
        i = r.randrange(n - 1)
        wrong[i], wrong[i + 1] = wrong[i + 1], wrong[i]
    return Example(
        prompt=[msg("user", question)],
        final=msg("assistant", ", ".join(target)),
        rejected=msg("assistant", ", ".join(wrong)),
    )


def _word_items(text: str) -> list[str]:
    return [norm(w) for w in short_answer(text, fold_case=True).split(",")]


def verify(prediction: str, answer: str) -> bool:
    """The same comma-separated words in the same order, case folded."""
    return _word_items(prediction) == _word_items(answer)
