"""Chat rendering: text for the model, token ids, and assistant-only labels.

Assistant spans are found by rendering prefixes: for an assistant turn i, the chat through turn i
is rendered once as is and once with a marker in place of the turn's content; the span runs from
where the marker sits to the end of `apply_chat_template(messages[:i+1])`, less trailing whitespace. The span therefore holds the answer and the template's end-of-turn token
(`<|im_end|>` in ChatML), which is what teaches the model to stop. Every assistant turn of a
multi-turn chat is supervised; everything else (system, user, the `<|im_start|>assistant` header) is -100.

Which template: the tokenizer's (`data.chat_template: null`), a bundled one by name (`chatml`:
ChatML with Hermes/Qwen2.5-style tools; `strict_alternating`: refuses roles out of order, as Llama-2
and Mistral templates do), or a `.jinja` file. It is passed to `apply_chat_template(chat_template=)`,
never written into the shared tokenizer. `template_hash` (the run card's `chat_template_sha256`, which
`eval.py` checks: the template lock) hashes the template text and the tool rendering mode.

Tools, two modes chosen by what the template can do (`supports_tools`, found by rendering probes):
- template: a template that renders `tools=` and assistant `tool_calls` gets them as they are (OpenAI
  shape, arguments as a dict), e.g. `chatml` puts the schemas in `<tools>` in the system turn and a call
  as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`;
- fallback (templates without tools, SmolLM2's among them): llmft renders them itself, template-
  independently: the tool list becomes compact signatures appended to the system message, and an
  assistant tool call becomes the JSON text `{"name": ..., "arguments": {...}}`.
Either way the model's call holds that JSON object, which is what the verifier parses; the schemas and
tool results are never supervised.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from jinja2.exceptions import TemplateError

from llmft.constants import IGNORE_INDEX

# Stands in for an assistant turn's content to find where the template puts that content.
CONTENT_MARKER = "\u2063llmft-assistant-content\u2063"
# The tool rendering mode is part of the template hash: change a version when its rendering changes.
TOOL_RENDERING_VERSION = "signatures-v1"  # fallback: llmft renders tools (the hash of runs before named templates)
TEMPLATE_TOOLS_VERSION = "template-tools-v1"  # the template renders tools= and tool_calls itself

BUNDLED_DIR = Path(__file__).resolve().parent / "chat_templates"
TOKENIZER_TEMPLATE = "tokenizer"  # data.chat_template / eval's chat_template: the tokenizer's own (as null)


class ChatTemplateError(ValueError):
    """The chat template refused a chat (for example roles out of order); the message is the template's."""


def bundled_templates() -> list[str]:
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.jinja"))


def resolve_template(chat_template: str | None, tokenizer, option: str = "data.chat_template") -> str:
    """The Jinja text of `chat_template`: null (or "tokenizer") = the tokenizer's own, a bundled name,
    or a path to a .jinja file. `option` names the setting in errors."""
    if chat_template is None or chat_template == TOKENIZER_TEMPLATE:
        own = tokenizer.chat_template
        if isinstance(own, dict):  # a tokenizer with several named templates: its default one
            own = own.get("default")
        if not own:
            raise ValueError(f"{option}=null: the tokenizer has no (default) chat template; name one "
                             f"(bundled: {', '.join(bundled_templates())}) or a .jinja file")
        return own
    bundled = BUNDLED_DIR / f"{chat_template}.jinja"
    if "/" not in chat_template and bundled.is_file():
        return bundled.read_text(encoding="utf-8")
    path = Path(chat_template).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{option}={chat_template}: neither a bundled template "
                                f"({', '.join(bundled_templates())}) nor an existing .jinja file")
    return path.read_text(encoding="utf-8")


def tool_call_text(call: dict) -> str:
    """Canonical text of one tool call (OpenAI shape or bare {"name", "arguments"})."""
    fn = call.get("function", call)
    return json.dumps({"name": fn["name"], "arguments": call_arguments(fn)}, ensure_ascii=False)


def call_arguments(fn: dict) -> dict:
    """A call's arguments as a dict (rows may hold them as a JSON string, as OpenAI's API does)."""
    args = fn.get("arguments", {})
    return json.loads(args) if isinstance(args, str) else args


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
    """Fallback mode: plain {"role", "content"} messages any chat template can render."""
    out = [{"role": m["role"], "content": assistant_text(m) if m["role"] == "assistant" else m["content"]}
           for m in messages]
    if tools:
        listing = tools_text(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n{listing}"}
        else:
            out.insert(0, {"role": "system", "content": listing})
    return out


def to_tool_messages(messages: list[dict]) -> list[dict]:
    """Template mode: messages as tool-aware templates expect them: assistant `tool_calls` in the OpenAI
    shape with dict arguments, content "" rather than null; a tool result keeps its `name`/`tool_call_id`."""
    out = []
    for m in messages:
        message = {"role": m["role"], "content": m.get("content") or ""}
        if m["role"] == "assistant" and m.get("tool_calls"):
            message["tool_calls"] = [
                {"type": "function", "function": {"name": fn["name"], "arguments": call_arguments(fn)}}
                for fn in (call.get("function", call) for call in m["tool_calls"])
            ]
        if m["role"] == "tool":
            message.update({k: m[k] for k in ("name", "tool_call_id") if k in m})
        out.append(message)
    return out


PROBE_TOOL = {"type": "function", "function": {"name": "llmft_probe_tool", "description": "probe",
              "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}
PROBE_CALL = "llmft_probe_call"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def num_supervised(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


class ChatRenderer:
    """Renders chats with one chat template (the tokenizer's, or `chat_template`: a bundled name or a
    .jinja file); the template is locked by its hash."""

    def __init__(self, tokenizer, max_length: int, chat_template: str | None = None,
                 option: str = "data.chat_template"):
        if max_length <= 1:
            raise ValueError(f"data.max_length={max_length}: must be at least 2 tokens")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.template = resolve_template(chat_template, tokenizer, option)  # option: the setting named in errors
        self.supports_tools = self._supports_tools()

    def _supports_tools(self) -> bool:
        """Whether the template renders a tool list and an assistant tool call (probes that a template
        without tools would ignore or refuse)."""
        user = {"role": "user", "content": "probe"}
        call = {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": PROBE_CALL, "arguments": {"x": "y"}}}]}
        try:
            listed = self.render([user], tools=[PROBE_TOOL])
            called = self.render([user, call])
        except (ValueError, TypeError, KeyError):  # ChatTemplateError among them: a template refusing tools
            return False
        return "llmft_probe_tool" in listed and PROBE_CALL in called

    @property
    def tool_mode(self) -> str:
        return TEMPLATE_TOOLS_VERSION if self.supports_tools else TOOL_RENDERING_VERSION

    @property
    def template_hash(self) -> str:
        return hashlib.sha256((self.template + self.tool_mode).encode()).hexdigest()[:16]

    def render(self, messages: list[dict], add_generation_prompt: bool = False, tools: list[dict] | None = None) -> str:
        """The template's text for `messages` as given (see `template_messages` for rows)."""
        try:
            return self.tokenizer.apply_chat_template(messages, tools=tools, chat_template=self.template, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        except TemplateError as err:
            raise ChatTemplateError(str(err)) from err

    def template_messages(self, messages: list[dict], tools: list[dict] | None) -> tuple[list[dict], list[dict] | None]:
        """(messages, tools) to hand the template: as they are for a tool-aware template, else the fallback
        (tools as signatures in the system message, a call as JSON text; tools then None)."""
        if self.supports_tools:
            return to_tool_messages(messages), tools or None
        return to_template_messages(messages, tools), None

    def prompt_text(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        """What generation starts from: the chat up to (without) its final assistant turn."""
        msgs = list(messages)
        if msgs and msgs[-1]["role"] == "assistant":
            msgs = msgs[:-1]
        rendered, tools = self.template_messages(msgs, tools)
        return self.render(rendered, add_generation_prompt=True, tools=tools)

    def assistant_spans(self, messages: list[dict], supervised_from: int = 0,
                        tools: list[dict] | None = None) -> tuple[str, list[tuple[int, int]]]:
        """The full render and the character spans of every assistant turn at index >= supervised_from.

        A turn's span starts where its content starts and ends after the template's end-of-turn
        token. The start is found by rendering the chat through that turn with a marker in place
        of its content (and without its tool calls, which templates put before or after the content):
        whatever the template puts before the content (a default system prompt when the chat opens
        with an assistant turn, the role header) is left unsupervised.
        """
        full = self.render(messages, tools=tools)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant" or i < supervised_from:
                continue
            through = self.render(messages[: i + 1], tools=tools)
            stand_in = {k: v for k, v in message.items() if k != "tool_calls"} | {"content": CONTENT_MARKER}
            marked = self.render(messages[:i] + [stand_in], tools=tools)
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
        completion, not the assistant turns of its shared prompt). Raises `ChatTemplateError` when the
        template refuses the chat.
        """
        rendered, template_tools = self.template_messages(messages, tools)
        shift = len(rendered) - len(messages)  # a system message added for the tool list (fallback)
        text, spans = self.assistant_spans(rendered, supervised_from + shift if supervised_from else 0, template_tools)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        labels = [
            token if any(start < end_tok and start_tok < end for start, end in spans) else IGNORE_INDEX
            for token, (start_tok, end_tok) in zip(enc["input_ids"], enc["offset_mapping"])
        ]
        return Encoded(enc["input_ids"][: self.max_length], labels[: self.max_length])


class TemplateLockError(RuntimeError):
    """eval.py would render a run's prompts with another template than the run trained with."""


def check_template_lock(trained_hash: str | None, used_hash: str, run: str, force: bool = False) -> dict:
    """The template lock: evaluation renders with the template the run trained with (`chat_template_sha256`
    of its run card), unless forced. Returns what the eval card records: both hashes and whether forced.
    A run card without a hash (a run older than the lock) is not checked."""
    record = {"sha256": used_hash, "run_sha256": trained_hash, "forced": False}
    if trained_hash is None or trained_hash == used_hash:
        return record
    if not force:
        raise TemplateLockError(
            f"run_dir={run} trained with chat template {trained_hash} (its run card's chat_template_sha256), "
            f"but this evaluation would render with {used_hash}; evaluate with the run's template (drop "
            f"chat_template=), or pass force_template=true to evaluate anyway")
    return {**record, "forced": True}
