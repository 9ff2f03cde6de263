"""Row formats: reading files, validating rows, converting between views.

Formats (DESIGN.md): chat, alpaca, completion, preference, unpaired, prompt. Each method asks for
a view (chat, pair, unpaired, prompt); `convert` turns compatible rows into it (preference -> chat
via chosen, preference -> unpaired, any -> prompt) and refuses the others with a message naming both. A bad row is a `DataFormatError` naming the file, the line and the field.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

FORMATS = ("chat", "alpaca", "completion", "preference", "unpaired", "prompt")
ROLES = ("system", "user", "assistant", "tool")


class DataFormatError(ValueError):
    """A row that cannot be used: the message names file, line (1-based) and field."""

    def __init__(self, source: str, line: int | None, message: str):
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a .jsonl / .json / .parquet / .csv file, each with `_line` (its 1-based line or record)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl(path)
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataFormatError(str(path), err.lineno, f"malformed JSON: {err.msg}") from err
        if not isinstance(data, list):
            raise DataFormatError(str(path), 1, "a .json data file must hold a list of row objects")
        rows = [(i + 1, row) for i, row in enumerate(data)]
    elif suffix in (".parquet", ".csv"):
        import datasets  # optional heavy import, only for these formats

        loader = "parquet" if suffix == ".parquet" else "csv"
        table = datasets.load_dataset(loader, data_files=str(path), split="train")
        rows = [(i + (2 if loader == "csv" else 1), dict(row)) for i, row in enumerate(table)]
    else:
        raise DataFormatError(str(path), None, f"unknown file type {suffix!r}: use .jsonl, .json, .parquet or .csv")
    out = []
    for line, row in rows:
        if not isinstance(row, dict):
            raise DataFormatError(str(path), line, f"a row must be a JSON object, got {type(row).__name__}")
        out.append({**row, "_line": line})
    return out


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append((line_no, json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataFormatError(str(path), line_no, f"malformed JSON (column {err.colno}): {err.msg}") from err
    return rows


def _require(row: dict, field: str, kinds: tuple[type, ...], source: str) -> Any:
    if field not in row or row[field] is None:
        raise DataFormatError(source, row.get("_line"), f"missing field {field!r}")
    if not isinstance(row[field], kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise DataFormatError(source, row.get("_line"), f"field {field!r} must be {names}, got {type(row[field]).__name__}")
    return row[field]


def _messages(value: Any, field: str, row: dict, source: str) -> list[dict]:
    """A message list, or a string taken as one message of the role the field implies."""
    if isinstance(value, str):
        return [{"role": "user" if field == "prompt" else "assistant", "content": value}]
    if not isinstance(value, list) or not value:
        raise DataFormatError(source, row.get("_line"), f"field {field!r} must be a string or a non-empty message list")
    for i, message in enumerate(value):
        where = f"field {field!r}[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise DataFormatError(source, row.get("_line"), f"{where} needs a role among {ROLES}")
        if not isinstance(message.get("content"), str) and not message.get("tool_calls"):
            raise DataFormatError(source, row.get("_line"), f"{where} needs string content or tool_calls")
    return [dict(m, content=m.get("content") or "") for m in value]


def _passthrough(row: dict) -> dict:
    """The fields every view carries along: the row's id, task, tools and reference answer."""
    return {k: row[k] for k in ("id", "task", "tools", "answer") if k in row}


def to_chat(row: dict, fmt: str, source: str) -> dict:
    """Convert one row of `fmt` to the chat view {"messages", "tools"?, "task"?, "answer"?, "id"?}."""
    extra = _passthrough(row)
    if fmt == "chat":
        messages = _messages(_require(row, "messages", (list,), source), "messages", row, source)
    elif fmt == "alpaca":
        instruction = _require(row, "instruction", (str,), source)
        context = row.get("input") or ""
        user = f"{instruction}\n\n{context}" if context else instruction
        messages = [{"role": "user", "content": user},
                    {"role": "assistant", "content": _require(row, "output", (str,), source)}]
    elif fmt in ("completion", "unpaired"):
        prompt = _messages(_require(row, "prompt", (str, list), source), "prompt", row, source)
        messages = prompt + _messages(_require(row, "completion", (str, list), source), "completion", row, source)
        if fmt == "unpaired" and not isinstance(row.get("label"), bool):
            raise DataFormatError(source, row.get("_line"), "field 'label' must be true or false")
    elif fmt == "preference":
        prompt = _messages(_require(row, "prompt", (str, list), source), "prompt", row, source)
        messages = prompt + _messages(_require(row, "chosen", (str, list), source), "chosen", row, source)
    elif fmt == "prompt":
        raise DataFormatError(source, None, "data.format=prompt has no responses; method=sft needs chat, alpaca, "
                              "completion, preference (chosen) or unpaired (label true) rows")
    else:
        raise DataFormatError(source, None, f"data.format={fmt!r}: choose one of {FORMATS}")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataFormatError(source, row.get("_line"), "the chat has no assistant turn to learn from")
    return {**extra, "messages": messages}


def to_pair(row: dict, fmt: str, source: str) -> dict:
    """A preference row as the `pair` view {"prompt", "chosen", "rejected", "tools"?, ...}."""
    if fmt != "preference":
        raise DataFormatError(source, None, f"data.format={fmt} has no rejected answers: a pairwise method "
                              "(dpo, ipo, hinge, simpo, orpo, reward) needs data.format=preference rows")
    extra = _passthrough(row)
    sides = {f: _messages(_require(row, f, (str, list), source), f, row, source) for f in ("prompt", "chosen", "rejected")}
    return {**extra, **sides}


def to_unpaired(row: dict, fmt: str, source: str) -> list[dict]:
    """Unpaired rows {"prompt", "completion", "label"}: as they are, or both sides of a preference row."""
    extra = _passthrough(row)
    if fmt == "preference":
        pair = to_pair(row, fmt, source)
        return [{**extra, "prompt": pair["prompt"], "completion": pair[side], "label": side == "chosen"}
                for side in ("chosen", "rejected")]
    if fmt != "unpaired":
        raise DataFormatError(source, None, f"data.format={fmt} has no labelled completions: method=kto needs "
                              "data.format=unpaired (or preference) rows")
    if not isinstance(row.get("label"), bool):
        raise DataFormatError(source, row.get("_line"), "field 'label' must be true or false")
    prompt = _messages(_require(row, "prompt", (str, list), source), "prompt", row, source)
    completion = _messages(_require(row, "completion", (str, list), source), "completion", row, source)
    return [{**extra, "prompt": prompt, "completion": completion, "label": row["label"]}]


def to_prompt(row: dict, fmt: str, source: str) -> dict:
    """The prompt-only view {"prompt", "answer"?}: the chat before its last assistant turn."""
    if fmt == "prompt":
        extra = _passthrough(row)
        return {**extra, "prompt": _messages(_require(row, "prompt", (str, list), source), "prompt", row, source)}
    chat = to_chat(row, fmt, source)
    messages = chat.pop("messages")
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {**chat, "prompt": messages[:last]}


def convert(rows: list[dict], fmt: str, view: str, source: str) -> tuple[list[dict], Counter]:
    """Rows of `fmt` as the `view` a method needs, and the count of rows left out by reason.

    From unpaired rows the chat view (SFT) learns the good completions only: the bad ones are left
    out and counted. Incompatible format/view pairs fail with a message naming both.
    """
    if fmt not in FORMATS:
        raise DataFormatError(source, None, f"data.format={fmt!r}: choose one of {FORMATS}")
    dropped: Counter = Counter()
    kept: list[dict] = []
    for row in rows:
        if view == "chat":
            if fmt == "unpaired" and row.get("label") is False:
                dropped["unpaired row with label false (not an SFT target)"] += 1
                continue
            kept.append(to_chat(row, fmt, source))
        elif view == "pair":
            kept.append(to_pair(row, fmt, source))
        elif view == "unpaired":
            kept.extend(to_unpaired(row, fmt, source))
        elif view == "prompt":
            kept.append(to_prompt(row, fmt, source))
        else:
            raise ValueError(f"unknown view {view!r}: chat, pair, unpaired or prompt")
    return kept, dropped
