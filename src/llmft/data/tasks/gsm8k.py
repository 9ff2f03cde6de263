"""``gsm8k``: grade-school maths word problems (openai/gsm8k), verified by their final number.

Not one of the bundled suite's tasks (no generator; evaluation does not iterate it): rows of the
public dataset carry ``task: gsm8k`` and ``answer: "<number>"`` (``data/layouts.py``), so that
``reward=verifier`` can score GRPO/PPO responses on them.

The response's number is the first number after its last ``####`` (the dataset's own answer line),
else its last number; it is compared with the reference numerically (``1,000`` == ``1000`` ==
``1000.00``, ``$18`` == ``18``).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

CASE_RULE = "none: the answer is a number"
MAX_NEW_TOKENS = 256  # a worked solution, then "#### n"

# a number with optional sign, thousands groups and decimals; "3." at a sentence end is 3
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def final_number(text: str) -> Decimal | None:
    """The number a response (or a reference) gives as its answer, or None when it gives none."""
    text = text or ""
    if "####" in text:
        found = NUMBER.search(text.rsplit("####", 1)[1])
    else:
        numbers = NUMBER.findall(text)
        found = numbers[-1] if numbers else None
    if found is None:
        return None
    value = found.group(0) if isinstance(found, re.Match) else found
    try:
        return Decimal(value.replace(",", ""))
    except InvalidOperation:
        return None


def verify(prediction: str, answer: str) -> bool:
    """True when the response's final number equals the reference's (numerically)."""
    want, got = final_number(answer), final_number(prediction)
    return want is not None and got is not None and got == want
