"""The four views of the chat rows and the bundled files they are written to.

``src/llmft/data/bundled/{view}_{split}.jsonl``, one JSON row a line:

``chat``        ``{"id", "task", "messages", "tools"?, "answer"}`` (messages end with the
                evaluated assistant turn; ``policy`` rows also carry ``"refusal"``)
``preference``  ``{"id", "task", "prompt", "tools"?, "chosen", "rejected", "answer"}``
``unpaired``    ``{"id", "task", "prompt", "tools"?, "completion", "label"}`` (``-good``/``-bad``)
``prompt``      ``{"id", "task", "prompt", "tools"?, "answer"}``
"""

from __future__ import annotations

import json
from pathlib import Path

from llmft.data.tasks.splits import SPLITS, check_split, generate, rejected_for
from llmft.utils import write_bytes_atomic

VIEWS: tuple[str, ...] = ("chat", "preference", "unpaired", "prompt")
BUNDLED_DIR: Path = Path(__file__).resolve().parent.parent / "bundled"


def views(rows: list[dict]) -> dict[str, list[dict]]:
    """The chat rows plus their preference, unpaired and prompt views (same order)."""
    out: dict[str, list[dict]] = {v: [] for v in VIEWS}
    for row in rows:
        prompt = row["messages"][:-1]
        final = row["messages"][-1]
        rejected = rejected_for(row)
        tools = {"tools": row["tools"]} if "tools" in row else {}
        base = {"id": row["id"], "task": row["task"], "prompt": prompt, **tools}
        out["chat"].append(row)
        out["preference"].append(
            {**base, "chosen": [final], "rejected": [rejected], "answer": row["answer"]}
        )
        for suffix, msg, label in (("good", final, True), ("bad", rejected, False)):
            out["unpaired"].append(
                {**base, "id": f"{row['id']}-{suffix}", "completion": [msg], "label": label}
            )
        out["prompt"].append({**base, "answer": row["answer"]})
    return json.loads(json.dumps(out))


def bundled_path(view: str, split: str) -> Path:
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; valid views: {', '.join(VIEWS)}")
    check_split(split)
    return BUNDLED_DIR / f"{view}_{split}.jsonl"


def load_bundled(view: str, split: str) -> list[dict]:
    path = bundled_path(view, split)
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _dumps_lines(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def render_files() -> dict[str, bytes]:
    """File name -> exact bytes of every bundled file."""
    files: dict[str, bytes] = {}
    for split in SPLITS:
        for view, rows in views(generate(split)).items():
            files[f"{view}_{split}.jsonl"] = _dumps_lines(rows)
    return files


def write_all(out_dir: Path = BUNDLED_DIR) -> dict[str, int]:
    """Write all 12 files into ``out_dir`` (each atomically); return rows per file name."""
    counts: dict[str, int] = {}
    for name, data in render_files().items():
        write_bytes_atomic(Path(out_dir) / name, data)
        counts[name] = data.count(b"\n")
    return counts
