"""Row formats: reading files, validating rows, converting between views.

Formats (DESIGN.md): chat, alpaca, completion, preference, unpaired, prompt. Each method asks for
a view (chat, pair, unpaired, prompt); `convert` turns compatible rows into it (preference -> chat
via chosen, preference -> unpaired, any -> prompt) and refuses the others with a message naming both;
`check_conversion` says so at start-up, naming the data config and the method. A bad row is a
`DataFormatError` naming the file, the line and the field (`messages[2].content`); converted rows keep
`_source` and `_line`, so later stages can name them too.
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
            data = json.loads(_utf8(path.read_bytes(), path, 1))
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
    with path.open("rb") as handle:  # bytes: a line that is not UTF-8 is named, not a UnicodeDecodeError
        for line_no, raw in enumerate(handle, start=1):
            line = _utf8(raw, path, line_no)
            if line_no == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
            if not line.strip():
                continue
            try:
                rows.append((line_no, json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataFormatError(str(path), line_no, f"malformed JSON (column {err.colno}): {err.msg}") from err
    return rows


def _utf8(raw: bytes, path: Path, first_line: int) -> str:
    """`raw` decoded as UTF-8; bytes that are not UTF-8 are an error naming their line and column."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + raw.count(b"\n", 0, err.start)
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        bad = raw[err.start:err.end].hex(" ")
        raise DataFormatError(str(path), line, f"bytes that are not UTF-8 at byte column {column} ({bad}): "
                              "save the file as UTF-8") from None


def _require(row: dict, field: str, kinds: tuple[type, ...], source: str) -> Any:
    if field not in row or row[field] is None:
        raise DataFormatError(source, row.get("_line"), f"missing field {field!r}")
    value = row[field]
    if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
        names = " or ".join("list of messages" if k is list else k.__name__ for k in kinds)
        raise DataFormatError(source, row.get("_line"), f"field {field!r} must be {names}, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise DataFormatError(source, row.get("_line"), f"field {field!r} is empty")
    return value


def _messages(value: Any, field: str, row: dict, source: str) -> list[dict]:
    """A message list, or a string taken as one message of the role the field implies.

    Errors name the message's field, e.g. `messages[2].content`: a role outside ROLES, content that
    is not a string, or a user / assistant message with nothing in it (no text and no tool call).
    """
    line = row.get("_line")
    if isinstance(value, str):
        if not value.strip():
            raise DataFormatError(source, line, f"field {field!r} is empty")
        return [{"role": "user" if field == "prompt" else "assistant", "content": value}]
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else type(value).__name__
        raise DataFormatError(source, line, f"field {field!r} must be a string or a non-empty message list, got {got}")
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise DataFormatError(source, line, f"field {where!r} must be a message object, got {type(message).__name__}")
        if message.get("role") not in ROLES:
            raise DataFormatError(source, line, f"field '{where}.role' must be one of {ROLES}, got {message.get('role')!r}")
        content, calls = message.get("content"), message.get("tool_calls")
        if content is not None and not isinstance(content, str):
            raise DataFormatError(source, line, f"field '{where}.content' must be a string, got {type(content).__name__}")
        if calls is not None and not isinstance(calls, list):
            raise DataFormatError(source, line, f"field '{where}.tool_calls' must be a list, got {type(calls).__name__}")
        if not calls and not (content or "").strip() and message["role"] in ("user", "assistant"):
            what = "missing" if content is None else "empty"
            raise DataFormatError(source, line, f"field '{where}.content' is {what} ({message['role']} messages "
                                  "need text or tool_calls)")
        if not calls and content is None:
            raise DataFormatError(source, line, f"field '{where}.content' is missing")
    return [dict(m, content=m.get("content") or "") for m in value]


def _passthrough(row: dict) -> dict:
    """The fields every view carries along: the row's id, task, tools and reference answer, and where it
    was read (`_source`, `_line`), so that later stages (encoders, contamination) can name file and line."""
    return {k: row[k] for k in ("id", "task", "tools", "answer", "_source", "_line") if k in row}


def _label(row: dict, source: str) -> bool:
    if "label" not in row or row["label"] is None:
        raise DataFormatError(source, row.get("_line"), "missing field 'label' (true or false)")
    if not isinstance(row["label"], bool):
        raise DataFormatError(source, row.get("_line"),
                              f"field 'label' must be true or false, got {type(row['label']).__name__} {row['label']!r}")
    return row["label"]


def to_chat(row: dict, fmt: str, source: str) -> dict:
    """Convert one row of `fmt` to the chat view {"messages", "tools"?, "task"?, "answer"?, "id"?}."""
    extra = _passthrough(row)
    if fmt == "chat":
        messages = _messages(_require(row, "messages", (list,), source), "messages", row, source)
    elif fmt == "alpaca":
        instruction = _require(row, "instruction", (str,), source)
        context = row.get("input") or ""
        if not isinstance(context, str):
            raise DataFormatError(source, row.get("_line"), f"field 'input' must be str, got {type(context).__name__}")
        user = f"{instruction}\n\n{context}" if context else instruction
        messages = [{"role": "user", "content": user},
                    {"role": "assistant", "content": _require(row, "output", (str,), source)}]
    elif fmt in ("completion", "unpaired"):
        prompt = _messages(_require(row, "prompt", (str, list), source), "prompt", row, source)
        messages = prompt + _messages(_require(row, "completion", (str, list), source), "completion", row, source)
        if fmt == "unpaired":
            _label(row, source)
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
    _label(row, source)
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


# Which row formats each view can be made from (DESIGN.md "Data rows accepted"), and what to give instead.
CONVERSIONS: dict[str, tuple[str, ...]] = {
    "chat": ("chat", "alpaca", "completion", "preference", "unpaired"),
    "pair": ("preference",),
    "unpaired": ("unpaired", "preference"),
    "prompt": FORMATS,
}
NEEDS: dict[str, str] = {
    "chat": "rows with responses to learn from: data.format=chat, alpaca, completion, preference (its chosen "
            "side) or unpaired (its label-true rows)",
    "pair": "a chosen and a rejected answer per prompt: data.format=preference rows (prompt, chosen, rejected)",
    "unpaired": "labelled completions: data.format=unpaired rows (prompt, completion, label) or preference rows "
                "(each side becomes one)",
    "prompt": "prompts: any data.format",
}


def check_conversion(fmt: str, view: str, data_name: str, method_name: str) -> None:
    """Fail at start-up when rows of `fmt` cannot become the `view` a method needs, naming the data config
    and the method: `data=alpaca (format alpaca) cannot feed method=dpo: it needs a chosen and a rejected ...`."""
    if fmt not in FORMATS:
        raise ValueError(f"data={data_name}: data.format={fmt!r} is not a row format; choose one of {', '.join(FORMATS)}")
    if view not in CONVERSIONS:
        raise ValueError(f"method={method_name} asks for view {view!r}: choose one of {', '.join(CONVERSIONS)}")
    if fmt not in CONVERSIONS[view]:
        raise ValueError(f"data={data_name} (format {fmt}) cannot feed method={method_name}: it needs {NEEDS[view]}. "
                         "Choose a data config with such rows, or another method")
