"""One encoder per view: a row of the view a method declares -> a token-id example.

An example is a dict of token lists under prefixed keys, plus `meta` (DESIGN.md "Methods"):

``chat``      input_ids, labels                            (every assistant turn supervised)
``pair``      chosen_input_ids, chosen_labels,             (only the completion is supervised,
              rejected_input_ids, rejected_labels           not assistant turns of the prompt)
``unpaired``  input_ids, labels, desirable, prompt_length  (desirable: the row's label)
``prompt``    prompt_input_ids                             (ends with the generation prompt; meta
                                                            also holds the prompt messages and tools)

`meta` carries what evaluation and verifiers need (id, task, answer) through the collator as a
list. An encoder returns the example, or the reason it was dropped (counted by the datamodule).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from llmft.constants import IGNORE_INDEX
from llmft.data import formats
from llmft.data.templates import ChatRenderer, ChatTemplateError

Example = dict
Encoder = Callable[[dict, ChatRenderer], "Example | str"]

TRUNCATED = "every supervised token truncated away (data.max_length={max_length})"
SAME_PAIR = "chosen equals rejected (nothing to prefer)"
META_FIELDS = ("id", "task", "answer")


def meta(row: dict) -> dict:
    return {k: row[k] for k in META_FIELDS if k in row}


def encode_chat(row: dict, renderer: ChatRenderer) -> Example | str:
    encoded = renderer.encode(row["messages"], row.get("tools"))
    if encoded.num_supervised == 0:
        return TRUNCATED.format(max_length=renderer.max_length)
    return {"input_ids": encoded.input_ids, "labels": encoded.labels, "meta": meta(row)}


def encode_pair(row: dict, renderer: ChatRenderer) -> Example | str:
    if row["chosen"] == row["rejected"]:
        return SAME_PAIR
    prompt, tools = row["prompt"], row.get("tools")
    example = {"meta": meta(row)}
    for side in ("chosen", "rejected"):
        encoded = renderer.encode(prompt + row[side], tools, supervised_from=len(prompt))
        if encoded.num_supervised == 0:
            return TRUNCATED.format(max_length=renderer.max_length)
        example[f"{side}_input_ids"], example[f"{side}_labels"] = encoded.input_ids, encoded.labels
    return example


def encode_unpaired(row: dict, renderer: ChatRenderer) -> Example | str:
    prompt = row["prompt"]
    encoded = renderer.encode(prompt + row["completion"], row.get("tools"), supervised_from=len(prompt))
    if encoded.num_supervised == 0:
        return TRUNCATED.format(max_length=renderer.max_length)
    prompt_length = next(i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX)
    return {"input_ids": encoded.input_ids, "labels": encoded.labels, "desirable": bool(row["label"]),
            "prompt_length": prompt_length, "meta": meta(row)}


def encode_prompt(row: dict, renderer: ChatRenderer) -> Example | str:
    text = renderer.prompt_text(row["prompt"], row.get("tools"))
    ids = renderer.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > renderer.max_length:
        return f"prompt longer than data.max_length={renderer.max_length}"
    # the messages travel too: a reward model scores the chat `prompt + response`
    return {"prompt_input_ids": ids, "meta": {**meta(row), "prompt": row["prompt"], "tools": row.get("tools")}}


ENCODERS: dict[str, Encoder] = {
    "chat": encode_chat, "pair": encode_pair, "unpaired": encode_unpaired, "prompt": encode_prompt,
}


def example_length(example: Example) -> int:
    """Tokens of every sequence in the example: what length-grouped windows sort by."""
    return sum(len(v) for k, v in example.items() if k.endswith("input_ids"))


# The row fields an encoder renders, named when the chat template refuses a row.
RENDERED_FIELDS = {"chat": "messages", "pair": "prompt/chosen/rejected", "unpaired": "prompt/completion",
                   "prompt": "prompt"}


def encode_row(row: dict, renderer: ChatRenderer, view: str = "chat") -> Example | str:
    """One row's example of `view`, or the reason it is dropped. A chat the template refuses (roles out
    of order for a strict template) is bad input: a `DataFormatError` naming the row's file, line and field."""
    try:
        return ENCODERS[view](row, renderer)
    except ChatTemplateError as err:
        raise formats.DataFormatError(row.get("_source") or "data rows", row.get("_line"),
                                      f"field {RENDERED_FIELDS[view]!r}: {err}") from err


def encode_rows(rows: list[dict], renderer: ChatRenderer, view: str = "chat") -> tuple[list[dict], Counter]:
    """Examples of `view` (see `data.encoders`); rows an encoder refuses are dropped and counted by reason."""
    examples, dropped = [], Counter()
    for row in rows:
        example = encode_row(row, renderer, view)
        if isinstance(example, str):
            dropped[example] += 1
        else:
            examples.append(example)
    return examples, dropped
