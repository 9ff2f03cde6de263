"""Assistant-only label masks on the real SmolLM2 tokenizer and chat template."""
from __future__ import annotations

import json

from llmft.data.datamodule import ViewDataModule
from llmft.data.encoders import encode_rows
from llmft.data.rows import Rows
from llmft.data.encoders import TRUNCATED
from llmft.data.templates import IGNORE_INDEX, ChatRenderer
from llmft.models.factory import end_of_turn_ids

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Remember: my locker is 42."},
    {"role": "assistant", "content": "Noted."},
    {"role": "user", "content": "What is my locker number?"},
    {"role": "assistant", "content": "42"},
]


def supervised_text(tokenizer, encoded) -> str:
    return tokenizer.decode([t for t in encoded.labels if t != IGNORE_INDEX])


def test_only_assistant_turns_are_supervised_with_end_of_turn(smollm2_tokenizer):
    renderer = ChatRenderer(smollm2_tokenizer, 512)
    encoded = renderer.encode(CHAT)
    assert supervised_text(smollm2_tokenizer, encoded) == "Noted.<|im_end|>42<|im_end|>"
    im_end = smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    supervised = [t for t in encoded.labels if t != IGNORE_INDEX]
    assert supervised.count(im_end) == 2  # each assistant turn ends with a supervised end-of-turn
    # Every supervised label equals its input token; every other position is -100.
    for token, label in zip(encoded.input_ids, encoded.labels):
        assert label in (token, IGNORE_INDEX)
    # The prompt (system, user turns, assistant headers) is not supervised.
    assert "Remember" not in supervised_text(smollm2_tokenizer, encoded)
    assert "assistant" not in supervised_text(smollm2_tokenizer, encoded)


def test_pad_token_is_not_an_end_of_turn_token(smollm2_tokenizer):
    assert smollm2_tokenizer.pad_token_id is not None
    assert smollm2_tokenizer.pad_token_id not in end_of_turn_ids(smollm2_tokenizer)
    assert smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>") in end_of_turn_ids(smollm2_tokenizer)


def test_prompt_text_is_the_prefix_generation_continues(smollm2_tokenizer):
    renderer = ChatRenderer(smollm2_tokenizer, 512)
    prompt = renderer.prompt_text(CHAT)
    full = renderer.render(CHAT)
    assert full.startswith(prompt) and prompt.endswith("<|im_start|>assistant\n")
    assert full[len(prompt):].startswith("42<|im_end|>")


def test_tool_calls_render_as_json_and_tools_as_signatures(smollm2_tokenizer):
    renderer = ChatRenderer(smollm2_tokenizer, 512)
    tools = [{"type": "function", "function": {"name": "set_timer", "description": "Start a timer.",
              "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}}}}}]
    chat = [{"role": "user", "content": "Timer for 5 minutes"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "set_timer", "arguments": {"minutes": 5}}}]}]
    encoded = renderer.encode(chat, tools)
    assert supervised_text(smollm2_tokenizer, encoded) == '{"name": "set_timer", "arguments": {"minutes": 5}}<|im_end|>'
    assert "- set_timer(minutes: integer): Start a timer." in renderer.prompt_text(chat, tools)


def test_fully_truncated_rows_are_dropped_and_counted(smollm2_tokenizer):
    long_prompt = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    renderer = ChatRenderer(smollm2_tokenizer, max_length=64)
    examples, dropped = encode_rows([{"messages": long_prompt}, {"messages": short}, {"messages": long_prompt}],
                                    renderer)
    assert len(examples) == 1
    assert dropped == {TRUNCATED.format(max_length=64): 2}
    # A partly truncated row keeps its surviving supervised tokens and is not dropped.
    partly = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes " * 100}]
    kept, dropped = encode_rows([{"messages": partly}], renderer)
    assert len(kept) == 1 and not dropped and len(kept[0]["input_ids"]) == 64


def test_datamodule_logs_and_records_drop_counts(smollm2_tokenizer, caplog):
    long_row = {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]}
    ok_row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    rows = Rows(train=[long_row, ok_row, ok_row], val=[ok_row], files=[])
    dm = ViewDataModule(rows, ChatRenderer(smollm2_tokenizer, 64), batch_size=2, accumulate_grad_batches=1,
                              seed=0)
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert dm.dropped["train"][TRUNCATED.format(max_length=64)] == 1
    assert "dropped 1 train rows" in caplog.text
    assert len(dm.train_examples) == 2


def test_a_chat_opening_with_an_assistant_turn_supervises_only_the_assistant(smollm2_tokenizer):
    """SmolLM2's template inserts a default system prompt before a first non-system turn; that
    prompt and the role header used to be supervised as part of turn 0."""
    renderer = ChatRenderer(smollm2_tokenizer, 512)
    chat = [{"role": "assistant", "content": "Hello! Ask me anything."},
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "4"}]
    encoded = renderer.encode(chat)
    assert "SmolLM" in smollm2_tokenizer.decode(encoded.input_ids)  # the template's default system prompt
    assert supervised_text(smollm2_tokenizer, encoded) == "Hello! Ask me anything.<|im_end|>4<|im_end|>"


def test_online_rollouts_mix_the_tasks_while_other_views_group_by_length(smollm2_tokenizer):
    """A prompt-view window is one rollout: grouped by length it held one task (the tasks' prompts differ
    in length); drawn at random, most hold several, as the data does."""
    from llmft.data.rows import DataSpec, load_rows

    tasks_per_window = {}
    for view in ("prompt", "pair"):
        dm = ViewDataModule(load_rows(DataSpec(limit_train=160), view, 0), ChatRenderer(smollm2_tokenizer, 512), batch_size=8,
                            accumulate_grad_batches=1, seed=0, view=view)
        dm.setup("fit")
        windows = dm.train_dataloader().sampler.windows(0)
        assert sorted(i for w in windows for i in w) == list(range(len(dm.train_examples)))  # each prompt once
        tasks_per_window[view] = [len({dm.train_examples[i]["meta"]["task"] for i in w}) for w in windows]
    assert sum(n >= 3 for n in tasks_per_window["prompt"]) > 0.8 * len(tasks_per_window["prompt"])
    assert sum(n == 1 for n in tasks_per_window["pair"]) > 0.5 * len(tasks_per_window["pair"])


# --- named templates, tools through the template, roles out of order ---------------------------

TOOLS = [{"type": "function", "function": {"name": "set_timer", "description": "Start a timer.",
          "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}}}}}]
TOOL_CHAT = [  # a call (arguments as a JSON string, as OpenAI's API sends them), its result, a reply
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Timer for 5 minutes"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "set_timer", "arguments": '{"minutes": 5}'}}]},
    {"role": "tool", "content": '{"started": true}'},
    {"role": "assistant", "content": "Started."},
]


def test_smollm2_template_has_no_tools_so_the_fallback_and_its_hash_stay(smollm2_tokenizer):
    """Runs record the hash: the default template's must be what it was before named templates."""
    import hashlib

    renderer = ChatRenderer(smollm2_tokenizer, 512)
    assert not renderer.supports_tools
    old_hash = hashlib.sha256((smollm2_tokenizer.chat_template + "signatures-v1").encode()).hexdigest()[:16]
    assert renderer.template_hash == old_hash
    assert ChatRenderer(smollm2_tokenizer, 512, "tokenizer").template_hash == old_hash
    encoded = renderer.encode(TOOL_CHAT, TOOLS)
    assert supervised_text(smollm2_tokenizer, encoded) == (
        '{"name": "set_timer", "arguments": {"minutes": 5}}<|im_end|>Started.<|im_end|>')


def test_chatml_renders_tools_itself_and_supervises_only_the_assistant(smollm2_tokenizer):
    renderer = ChatRenderer(smollm2_tokenizer, 512, chat_template="chatml")
    assert renderer.supports_tools
    assert renderer.template_hash != ChatRenderer(smollm2_tokenizer, 512).template_hash
    encoded = renderer.encode(TOOL_CHAT, TOOLS)
    text = smollm2_tokenizer.decode(encoded.input_ids)
    schema = '{"type": "function", "function": {"name": "set_timer", "description": "Start a timer."'
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n") and f"<tools>\n{schema}" in text
    assert "<|im_start|>tool\n<tool_response>\n{\"started\": true}\n</tool_response><|im_end|>" in text
    assert "- set_timer(minutes: integer)" not in text  # not the fallback's signatures
    # the call turn and the reply are supervised; the schema, the tool result and the headers are not
    assert supervised_text(smollm2_tokenizer, encoded) == (
        '<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 5}}\n</tool_call><|im_end|>Started.<|im_end|>')
    for token, label in zip(encoded.input_ids, encoded.labels):
        assert label in (token, IGNORE_INDEX)
    prompt = renderer.prompt_text(TOOL_CHAT[:2], TOOLS)
    assert schema in prompt and prompt.endswith("<|im_start|>user\nTimer for 5 minutes<|im_end|>\n<|im_start|>assistant\n")


def test_a_named_template_does_not_touch_the_shared_tokenizer(smollm2_tokenizer):
    own = smollm2_tokenizer.chat_template
    ChatRenderer(smollm2_tokenizer, 512, chat_template="chatml").encode(TOOL_CHAT, TOOLS)
    assert smollm2_tokenizer.chat_template == own
    assert "<tool_call>" not in ChatRenderer(smollm2_tokenizer, 512).render(TOOL_CHAT[:2])


def test_the_tool_call_verifier_scores_a_call_written_the_templates_way(smollm2_tokenizer):
    """What chatml teaches the model to write (the supervised text of a bundled tool_call row) is what the
    verifier accepts against the row's answer; a wrong argument in that form is refused."""
    from llmft.data import tasks

    renderer = ChatRenderer(smollm2_tokenizer, 512, chat_template="chatml")
    row = next(r for r in tasks.load_bundled("chat", "val") if r["task"] == "tool_call")
    written = supervised_text(smollm2_tokenizer, renderer.encode(row["messages"], row["tools"]))
    assert written.startswith("<tool_call>\n{") and written.endswith("}\n</tool_call><|im_end|>")
    response = written.removesuffix("<|im_end|>")
    assert tasks.verify("tool_call", response, row["answer"])
    args = json.loads(row["answer"])["arguments"]
    key = next(iter(args))
    wrong = response.replace(json.dumps(args[key]), json.dumps(args[key] * 2 if isinstance(args[key], int) else "x"), 1)
    assert wrong != response and not tasks.verify("tool_call", wrong, row["answer"])


def test_a_jinja_file_is_a_template_and_a_missing_one_names_the_option(smollm2_tokenizer, tmp_path):
    path = tmp_path / "plain.jinja"
    path.write_text("{% for m in messages %}[{{ m['role'] }}]\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                    "{% if add_generation_prompt %}[assistant]\n{% endif %}")
    renderer = ChatRenderer(smollm2_tokenizer, 512, chat_template=str(path))
    encoded = renderer.encode(CHAT)
    assert smollm2_tokenizer.decode(encoded.input_ids).startswith("[system]\nBe brief.<|im_end|>\n[user]\nRemember")
    assert supervised_text(smollm2_tokenizer, encoded) == "Noted.<|im_end|>42<|im_end|>"
    try:
        ChatRenderer(smollm2_tokenizer, 512, chat_template=str(tmp_path / "nope.jinja"))
    except FileNotFoundError as err:
        assert "data.chat_template=" in str(err) and "nope.jinja" in str(err) and "chatml" in str(err)
    else:
        raise AssertionError("a missing template file was accepted")


def test_roles_out_of_order_name_file_line_and_field_with_a_strict_template(smollm2_tokenizer):
    import pytest

    from llmft.data.formats import DataFormatError

    renderer = ChatRenderer(smollm2_tokenizer, 512, chat_template="strict_alternating")
    ok = {"messages": CHAT, "_source": "chats.jsonl", "_line": 1}
    examples, dropped = encode_rows([ok], renderer)  # alternating roles render, supervised as ever
    assert not dropped and supervised_text(smollm2_tokenizer, ChatRenderer(smollm2_tokenizer, 512,
                                          "strict_alternating").encode(CHAT)) == "Noted.<|im_end|>42<|im_end|>"
    two_users = [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"},
                 {"role": "assistant", "content": "hello"}]
    bad = {"messages": two_users, "_source": "chats.jsonl", "_line": 7}
    with pytest.raises(DataFormatError) as err:
        encode_rows([ok, bad], renderer)
    assert str(err.value) == ("chats.jsonl:7: field 'messages': Conversation roles must alternate "
                              "user/assistant/user/assistant/... after an optional system message "
                              "(message 1 is user, expected assistant)")
    with pytest.raises(DataFormatError, match=r"^data rows: field 'prompt/chosen/rejected': Conversation roles"):
        encode_rows([{"prompt": two_users[:2], "chosen": [two_users[2]], "rejected": [{"role": "assistant",
                      "content": "no"}]}], renderer, "pair")
    # the tokenizer's own template takes the same chat
    assert encode_rows([bad], ChatRenderer(smollm2_tokenizer, 512))[0]
