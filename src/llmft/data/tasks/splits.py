"""Deterministic, disjoint splits of the suite.

Every row is generated from :data:`~llmft.data.tasks._common.SEED` (one ``random.Random`` per
task and split). Splits are disjoint by :func:`dedup_key`, the conversation (the messages before
the final assistant turn, *without* the tools) plus the answer: test is generated first, then
val, then train, and any row whose key was already used is rejected. The tools are left out on
purpose: a ``tool_call`` row that repeats another's request and answer with other distractor
tools is the same exercise. (:func:`prompt_key`, which does include the tools, identifies what
the model is shown.)
"""

from __future__ import annotations

import json
from typing import Any

from llmft.data.tasks._common import Example, rng
from llmft.data.tasks.registry import GENERATORS, TASK_NAMES
from llmft.data.templates import assistant_text

SPLITS: tuple[str, ...] = ("train", "val", "test")
# Rows per task in each split (so 600 / 80 / 200 rows in all).
SPLIT_SIZES: dict[str, int] = {"train": 120, "val": 16, "test": 40}
# Generation order for the dedup: a row (by dedup_key) used by an earlier split is never reused.
GENERATION_ORDER: tuple[str, ...] = ("test", "val", "train")

# chat rows per split, and the rejected assistant message of every row per split and id
Generated = tuple[dict[str, list[dict]], dict[str, dict[str, dict]]]


def _conversation(row: dict) -> list[dict]:
    """The messages before the final assistant turn, of a chat row (``messages``) or of a
    prompt-bearing view (``prompt``)."""
    if "messages" in row:
        msgs = list(row["messages"])
        if msgs and msgs[-1].get("role") == "assistant":
            msgs = msgs[:-1]
        return msgs
    return list(row["prompt"])


def _canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def prompt_key(row: dict) -> str:
    """Canonical JSON of what the model is shown: the messages before the final assistant
    turn, plus the tools. Works on chat rows (``messages``) and on prompt-bearing views."""
    return _canonical({"messages": _conversation(row), "tools": row.get("tools") or []})


def dedup_key(row: dict) -> str:
    """Canonical JSON of the conversation (without the tools) and the answer: the key the
    splits are disjoint by. Works on chat, preference and prompt rows (those with ``answer``)."""
    return _canonical({"messages": _conversation(row), "answer": row["answer"]})


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def _chat_row(task: str, split: str, index: int, ex: Example) -> dict:
    row: dict = {"id": f"{task}-{split}-{index:04d}", "task": task, "messages": ex.prompt + [ex.final]}
    if ex.tools is not None:
        row["tools"] = ex.tools
    row["answer"] = assistant_text(ex.final)
    if ex.extra:
        row.update(ex.extra)
    return row


def generate_all() -> Generated:
    """All chat rows per split, plus the rejected assistant message of every row (by id).
    Uncached: :func:`generate` and :func:`rejected_for` read one cached run."""
    used: set[str] = set()
    rows: dict[str, list[dict]] = {}
    rejected: dict[str, dict[str, dict]] = {}
    for split in GENERATION_ORDER:
        split_rows: list[dict] = []
        rejected[split] = {}
        for task in TASK_NAMES:
            r = rng(task, split)
            n, attempts = 0, 0
            while n < SPLIT_SIZES[split]:
                attempts += 1
                if attempts > 50 * SPLIT_SIZES[split]:
                    raise RuntimeError(f"{task}/{split}: too many duplicate rows")
                ex = GENERATORS[task](r, split)
                row = _chat_row(task, split, n, ex)
                key = dedup_key(row)
                if key in used:
                    continue
                used.add(key)
                split_rows.append(row)
                rejected[split][row["id"]] = ex.rejected
                n += 1
        rng("shuffle", split).shuffle(split_rows)
        rows[split] = split_rows
    return rows, rejected


_CACHE: Generated | None = None


def _cached() -> Generated:
    global _CACHE
    if _CACHE is None:
        _CACHE = generate_all()
    return _CACHE


def generate(split: str) -> list[dict]:
    """The chat rows of ``split`` (tasks interleaved, deterministic order). Fresh copies."""
    check_split(split)
    return json.loads(json.dumps(_cached()[0][split]))


def rejected_for(row: dict) -> dict:
    """The rejected assistant message generated with a suite row (not a copy)."""
    split = row["id"].split("-")[-2]
    try:
        return _cached()[1][split][row["id"]]
    except KeyError:
        raise ValueError(f"row {row.get('id')!r} is not a generated suite row") from None
