"""Adapters from public datasets' own column layouts to llmft row formats (`data.layout`).

Each layout names the public dataset it reads, the columns it needs and the llmft format it yields
(formats.py validates the result as rows of that format, so an adapter only reshapes):

================  =======================================  ===========================================
``alpaca``        tatsu-lab/alpaca                         alpaca: instruction, input, output (``text``,
                                                           the pre-rendered prompt, is left out)
``ultrachat``     HuggingFaceH4/ultrachat_200k             chat: ``messages``; ``prompt_id`` as id
``ultrafeedback`` HuggingFaceH4/ultrafeedback_binarized    preference: ``chosen``/``rejected`` are whole
                                                           chats repeating the prompt; prompt = their
                                                           shared messages before the final answer
``hh_rlhf``       Anthropic/hh-rlhf                        preference: ``chosen``/``rejected`` are one
                                                           string of ``\\n\\nHuman: ...\\n\\nAssistant:
                                                           ...`` turns, parsed as above
``kto_mix``       trl-lib/kto-mix-14k                      unpaired: prompt, completion (message lists),
                                                           label
``gsm8k``         openai/gsm8k (config ``main``)           completion: question -> the worked solution;
                                                           ``answer`` = the number after ``####``,
                                                           ``task: gsm8k`` for ``reward=verifier``
================  =======================================  ===========================================

A row missing a column, or whose column cannot be reshaped, is a `DataFormatError` naming the
source, the row's line (record number) and the field.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from llmft.data.formats import DataFormatError

Adapter = Callable[[dict, str], dict]


@dataclass(frozen=True)
class Layout:
    name: str
    dataset: str  # the public dataset in this layout
    format: str  # the llmft row format the adapter yields
    columns: tuple[str, ...]  # columns every row needs
    adapt: Adapter  # (row, source) -> a row of `format`


def _fail(row: dict, source: str, message: str) -> DataFormatError:
    return DataFormatError(source, row.get("_line"), message)


def _message_list(row: dict, field: str, source: str) -> list:
    value = row[field]
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise _fail(row, source, f"field {field!r} must be a list of messages ({{role, content}}), "
                                 f"got {type(value).__name__}")
    return value


def _split_final_answer(messages: list[dict], field: str, row: dict, source: str) -> tuple[list, list]:
    """(prompt, answer): the messages up to the last non-assistant one, and the assistant turn after it."""
    last = max((i for i, m in enumerate(messages) if m.get("role") != "assistant"), default=-1)
    if last == -1:
        raise _fail(row, source, f"field {field!r} has no prompt: no message before its assistant answer")
    if last == len(messages) - 1:
        raise _fail(row, source, f"field {field!r} ends with a {messages[last].get('role')} message: "
                                 "no assistant answer")
    return messages[:last + 1], messages[last + 1:]


def _shared_prompt(chosen: list[dict], rejected: list[dict], row: dict, source: str) -> dict:
    """A preference row from two whole chats that share the prompt and differ in the final answer."""
    prompt, chosen_answer = _split_final_answer(chosen, "chosen", row, source)
    rejected_prompt, rejected_answer = _split_final_answer(rejected, "rejected", row, source)
    if prompt != rejected_prompt:
        differ = next((i for i, (a, b) in enumerate(zip(prompt, rejected_prompt)) if a != b),
                      min(len(prompt), len(rejected_prompt)))
        raise _fail(row, source, f"fields 'chosen' and 'rejected' do not share the prompt: they differ at message "
                                 f"{differ} (chosen has {len(prompt)} prompt messages, rejected {len(rejected_prompt)})")
    return {"prompt": prompt, "chosen": chosen_answer, "rejected": rejected_answer}


def _with_id(out: dict, row: dict, column: str) -> dict:
    if row.get(column) not in (None, ""):
        out["id"] = row[column]
    return out


# --- the adapters ------------------------------------------------------------------------------


def alpaca(row: dict, source: str) -> dict:
    return {"instruction": row["instruction"], "input": row.get("input") or "", "output": row["output"]}


def ultrachat(row: dict, source: str) -> dict:
    return _with_id({"messages": _message_list(row, "messages", source)}, row, "prompt_id")


def ultrafeedback(row: dict, source: str) -> dict:
    chosen, rejected = _message_list(row, "chosen", source), _message_list(row, "rejected", source)
    return _with_id(_shared_prompt(chosen, rejected, row, source), row, "prompt_id")


HH_TURN = re.compile(r"\n\n(Human|Assistant):")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def hh_turns(text: str, field: str, row: dict, source: str) -> list[dict]:
    """The messages of an hh-rlhf string: `\\n\\nHuman: ...\\n\\nAssistant: ...` turns, text stripped."""
    if not isinstance(text, str):
        raise _fail(row, source, f"field {field!r} must be a string of Human:/Assistant: turns, "
                                 f"got {type(text).__name__}")
    parts = HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise _fail(row, source, f"field {field!r} must start with '\\n\\nHuman:' and hold Human:/Assistant: turns, "
                                 f"got {text[:40]!r}")
    return [{"role": HH_ROLES[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def hh_rlhf(row: dict, source: str) -> dict:
    chosen, rejected = (hh_turns(row[f], f, row, source) for f in ("chosen", "rejected"))
    return _shared_prompt(chosen, rejected, row, source)


def kto_mix(row: dict, source: str) -> dict:
    return {"prompt": row["prompt"], "completion": row["completion"], "label": row["label"]}


GSM8K_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)\s*$")


def gsm8k(row: dict, source: str) -> dict:
    """A completion row: the question, the worked solution (ending `#### n`, as the model should answer),
    and `answer` = n (commas removed) with `task: gsm8k` for the verifier."""
    solution = row["answer"]
    if not isinstance(solution, str):
        raise _fail(row, source, f"field 'answer' must be a string, got {type(solution).__name__}")
    final = GSM8K_FINAL.search(solution.strip())
    if final is None:
        raise _fail(row, source, "field 'answer' does not end with the final '#### <number>' line of gsm8k")
    return {"prompt": row["question"], "completion": solution, "answer": final.group(1).replace(",", ""),
            "task": "gsm8k"}


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("alpaca", "tatsu-lab/alpaca", "alpaca", ("instruction", "output"), alpaca),
    Layout("ultrachat", "HuggingFaceH4/ultrachat_200k", "chat", ("messages",), ultrachat),
    Layout("ultrafeedback", "HuggingFaceH4/ultrafeedback_binarized", "preference", ("chosen", "rejected"),
           ultrafeedback),
    Layout("hh_rlhf", "Anthropic/hh-rlhf", "preference", ("chosen", "rejected"), hh_rlhf),
    Layout("kto_mix", "trl-lib/kto-mix-14k", "unpaired", ("prompt", "completion", "label"), kto_mix),
    Layout("gsm8k", "openai/gsm8k", "completion", ("question", "answer"), gsm8k),
)}


def get(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ValueError(f"data.layout={name!r}: choose one of {', '.join(LAYOUTS)} (or null for rows already "
                         "in data.format)")
    return LAYOUTS[name]


def check_columns(layout: Layout, columns: list[str], source: str) -> None:
    """The source's columns hold every column the layout needs (before any row is read)."""
    missing = [c for c in layout.columns if c not in columns]
    if missing:
        raise DataFormatError(source, None, f"data.layout={layout.name} needs column(s) {', '.join(map(repr, missing))}; "
                              f"the source has {', '.join(map(repr, columns)) or 'no columns'} "
                              "(rename with data.columns={<source column>: <field>})")


def adapt_rows(layout: Layout, rows: list[dict], source: str) -> list[dict]:
    """Rows of `layout.format` from rows in the public layout; each keeps its `_line` and `_source`."""
    out = []
    for row in rows:
        for column in layout.columns:
            if row.get(column) is None:
                raise _fail(row, source, f"missing field {column!r} (data.layout={layout.name} needs "
                                         f"{', '.join(layout.columns)})")
        adapted = layout.adapt(row, source)
        out.append({**adapted, **{k: row[k] for k in ("_line", "_source") if k in row}})
    return out
