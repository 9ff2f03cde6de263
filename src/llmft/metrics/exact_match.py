"""Scores of generated answers."""
from __future__ import annotations

from collections import defaultdict


def exact_match_by_task(tasks: list[str], correct: list[bool]) -> dict[str, float]:
    """{"overall": fraction correct over all examples, "<task>": fraction within each task}."""
    if len(tasks) != len(correct):
        raise ValueError(f"{len(tasks)} task names for {len(correct)} verdicts")
    if not tasks:
        raise ValueError("no example to score")
    per_task: dict[str, list[bool]] = defaultdict(list)
    for task, ok in zip(tasks, correct):
        per_task[task].append(bool(ok))
    report = {"overall": sum(map(bool, correct)) / len(correct)}
    report.update({task: sum(v) / len(v) for task, v in sorted(per_task.items())})
    return report
