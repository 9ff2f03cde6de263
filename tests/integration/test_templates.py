"""Assistant-only label masks on the real SmolLM2 tokenizer and chat template."""
from __future__ import annotations

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
    rows = Rows(train=[long_row, ok_row, ok_row], val=[ok_row], files=[], dropped={})
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
