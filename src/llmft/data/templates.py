"""Chat rendering: text for the model, token ids, and assistant-only labels.

Assistant spans are found by rendering prefixes: for an assistant turn i, the chat through turn i
is rendered once as is and once with a marker in place of the turn's content; the span runs from
where the marker sits to the end of `apply_chat_template(messages[:i+1])`, less trailing whitespace. The span therefore holds the answer and the template's end-of-turn token
(`<|im_end|>` in ChatML), which is what teaches the model to stop. Every assistant turn of a
multi-turn chat is supervised; everything else (system, user, the `<|im_start|>assistant` header) is -100.

Tools: chat templates differ in whether and how they render tool schemas, so llmft renders them
itself, template-independently: the tool list becomes compact signatures appended to the system
message, and an assistant tool call becomes the JSON text `{"name": ..., "arguments": {...}}`,
which is also what the model is asked to produce and what the verifier parses.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from llmft.constants import IGNORE_INDEX

# Stands in for an assistant turn's content to find where the template puts that content.
CONTENT_MARKER = "\u2063llmft-assistant-content\u2063"
TOOL_RENDERING_VERSION = "signatures-v1"  # part of the template hash: change it when the rendering changes


def tool_call_text(call: dict) -> str:
    """Canonical text of one tool call (OpenAI shape or bare {"name", "arguments"})."""
    fn = call.get("function", call)
    args = fn.get("arguments", {})
    if isinstance(args, str):
        args = json.loads(args)
    return json.dumps({"name": fn["name"], "arguments": args}, ensure_ascii=False)


def assistant_text(message: dict) -> str:
    """An assistant message as the model writes it: its content, or its first tool call as JSON."""
    calls = message.get("tool_calls") or []
    return tool_call_text(calls[0]) if calls else (message.get("content") or "")


def tools_text(tools: list[dict]) -> str:
    """One line per tool: `- name(arg: type, ...): description`."""
    lines = ["Tools (reply with one JSON object {\"name\": ..., \"arguments\": {...}}):"]
    for tool in tools:
        fn = tool.get("function", tool)
        props = fn.get("parameters", {}).get("properties", {})
        args = ", ".join(f"{name}: {spec.get('type', 'any')}" for name, spec in props.items())
        lines.append(f"- {fn['name']}({args}): {fn.get('description', '').strip()}")
    return "\n".join(lines)


def to_template_messages(messages: list[dict], tools: list[dict] | None = None) -> list[dict]:
    """Plain {"role", "content"} messages any chat template can render."""
    out = [{"role": m["role"], "content": assistant_text(m) if m["role"] == "assistant" else m["content"]}
           for m in messages]
    if tools:
        listing = tools_text(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n{listing}"}
        else:
            out.insert(0, {"role": "system", "content": listing})
    return out


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def num_supervised(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


class ChatRenderer:
    """Renders chats with one tokenizer's chat template; the template is locked by its hash."""

    def __init__(self, tokenizer, max_length: int):
        if max_length <= 1:
            raise ValueError(f"data.max_length={max_length}: must be at least 2 tokens")
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def template_hash(self) -> str:
        text = (self.tokenizer.chat_template or "") + TOOL_RENDERING_VERSION
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def prompt_text(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        """What generation starts from: the chat up to (without) its final assistant turn."""
        msgs = list(messages)
        if msgs and msgs[-1]["role"] == "assistant":
            msgs = msgs[:-1]
        return self.render(to_template_messages(msgs, tools), add_generation_prompt=True)

    def assistant_spans(self, messages: list[dict], supervised_from: int = 0) -> tuple[str, list[tuple[int, int]]]:
        """The full render and the character spans of every assistant turn at index >= supervised_from.

        A turn's span starts where its content starts and ends after the template's end-of-turn
        token. The start is found by rendering the chat through that turn with a marker in place
        of its content: whatever the template puts before the content (a default system prompt
        when the chat opens with an assistant turn, the role header) is left unsupervised.
        """
        full = self.render(messages)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant" or i < supervised_from:
                continue
            through = self.render(messages[: i + 1])
            marked = self.render(messages[:i] + [{**message, "content": CONTENT_MARKER}])
            start = marked.find(CONTENT_MARKER)
            if start < 0 or not (full.startswith(through) and through.startswith(marked[:start])):
                raise ValueError(
                    "the chat template is not prefix-stable (rendering a chat's first turns is not a prefix "
                    "of rendering the whole chat), so assistant-only labels cannot be derived from it"
                )
            spans.append((start, len(through.rstrip())))
        return full, spans

    def encode(self, messages: list[dict], tools: list[dict] | None = None, supervised_from: int = 0) -> Encoded:
        """Token ids and assistant-only labels, truncated to max_length (may leave 0 supervised tokens).

        Only assistant turns from message `supervised_from` on are supervised (a preference pair's
        completion, not the assistant turns of its shared prompt).
        """
        rendered = to_template_messages(messages, tools)
        shift = len(rendered) - len(messages)  # a system message added for the tool list
        text, spans = self.assistant_spans(rendered, supervised_from + shift if supervised_from else 0)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        labels = [
            token if any(start < end_tok and start_tok < end for start, end in spans) else IGNORE_INDEX
            for token, (start_tok, end_tok) in zip(enc["input_ids"], enc["offset_mapping"])
        ]
        return Encoded(enc["input_ids"][: self.max_length], labels[: self.max_length])
