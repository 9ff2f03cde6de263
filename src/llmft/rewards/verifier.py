"""The task verifiers as a reward: 1.0 for a correct response, else 0.0 (the bundled suite's tasks, and
public datasets' tasks with a verifier, e.g. gsm8k: `tasks.VERIFIABLE_TASKS`)."""
from __future__ import annotations

from llmft.data import tasks


class TaskVerifier:
    """Scores each response with the verifier of its row's `task` against the row's `answer`."""

    name = "verifier"

    def __call__(self, completions: list[str], meta: list[dict]) -> list[float]:
        return [float(tasks.verify(m["task"], c, m["answer"])) for c, m in zip(completions, meta, strict=True)]

    def check_rows(self, rows: list[dict], where: str) -> None:
        """Every row needs a task with a verifier and an answer to verify against."""
        for i, row in enumerate(rows):
            missing = [k for k in ("task", "answer") if row.get(k) in (None, "")]
            if missing or row["task"] not in tasks.VERIFIABLE_TASKS:
                what = f"has no {' or '.join(missing)}" if missing else f"has task {row['task']!r}, not one with a verifier"
                raise ValueError(
                    f"reward=verifier: {where} row {i} (id {row.get('id', '?')}) {what}: the verifier reward needs each "
                    f"prompt's task ({', '.join(tasks.VERIFIABLE_TASKS)}) and answer. Give the rows answers, or score with a "
                    "reward model (reward=model reward.run_dir=<a method=reward run>) or your own function "
                    "(reward=function reward.fn=<module.function>)")
