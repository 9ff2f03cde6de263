"""``arithmetic``: two-digit addition / subtraction, two-digit times one-digit multiplication.

Case rule: none, the answer is a number. The rejected reply is the result of the wrong
operation or an off-by-a-little result.
"""

from __future__ import annotations

import random

from llmft.data.tasks._common import Example, msg, same_short_answer

CASE_RULE = "none: the answer is a number"
MAX_NEW_TOKENS = 12


def generate(r: random.Random, split: str) -> Example:
    kind = r.choices(["+", "-", "*"], weights=[4, 4, 2])[0]
    if kind == "+":
        a, b = r.randint(10, 99), r.randint(10, 99)
        value, wrong_op = a + b, abs(a - b)
    elif kind == "-":
        a, b = sorted((r.randint(10, 99), r.randint(10, 99)), reverse=True)
        value, wrong_op = a - b, a + b
    else:
        a, b = r.randint(10, 99), r.randint(2, 9)
        value, wrong_op = a * b, a + b
    question = f"What is {a} {'x' if kind == '*' else kind} {b}? Answer with the number only."
    if r.random() < 0.3 and wrong_op != value:
        wrong = wrong_op
    else:
        wrong = value + r.choice([-10, -2, -1, 1, 2, 10])
    return Example(
        prompt=[msg("user", question)],
        final=msg("assistant", str(value)),
        rejected=msg("assistant", str(wrong)),
    )


def verify(prediction: str, answer: str) -> bool:
    """The number only (no case to fold)."""
    return same_short_answer(prediction, answer, fold_case=False)
