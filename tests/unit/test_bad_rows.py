"""Bad input: each error names the file, the line (1-based) and the field; conversions between views,
with their counts; a data config that cannot feed a method fails naming both."""
from __future__ import annotations

import json
import re

import pytest

from llmft.data.formats import DataFormatError, check_conversion, convert, read_rows
from llmft.data.sources import SourceSpec, load_source


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GOOD_CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def load(path, fmt: str, view: str = "chat"):
    """Through the real path: load_source (read, tag), then the conversion a method's view needs."""
    loaded = load_source(SourceSpec(path=str(path), format=fmt))
    return convert(loaded.rows, fmt, view, loaded.origin)


@pytest.mark.parametrize(("fmt", "bad_row", "message"), [
    ("chat", {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]},
     "field 'messages[0].content' must be a string, got int"),
    ("chat", {"messages": [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}]},
     "field 'messages[1].role' must be one of"),
    ("chat", {"messages": "Hi"}, "field 'messages' must be list of messages, got str"),
    ("chat", {"messages": [{"role": "user", "content": "x"}, "hello"]},
     "field 'messages[1]' must be a message object, got str"),
    ("alpaca", {"instruction": "Add", "input": "1 2", "output": 3}, "field 'output' must be str, got int"),
    ("alpaca", {"instruction": ["Add"], "output": "3"}, "field 'instruction' must be str, got list"),
    ("unpaired", {"prompt": "Q", "completion": "A", "label": "yes"}, "field 'label' must be true or false, got str 'yes'"),
    ("preference", {"prompt": "Q", "chosen": {"text": "A"}, "rejected": "B"},
     "field 'chosen' must be str or list of messages, got dict"),
])
def test_wrong_type_in_a_field_is_named_with_file_and_line(tmp_path, fmt, bad_row, message):
    good = {"chat": GOOD_CHAT, "alpaca": {"instruction": "Say hi", "output": "hi"},
            "unpaired": {"prompt": "Q", "completion": "A", "label": True},
            "preference": {"prompt": "Q", "chosen": "A", "rejected": "B"}}[fmt]
    path = write_jsonl(tmp_path / "d.jsonl", [good, good, bad_row])
    view = "pair" if fmt == "preference" else "chat"
    with pytest.raises(DataFormatError, match=rf"^{re.escape(f'{path}:3: {message}')}"):
        load(path, fmt, view)


@pytest.mark.parametrize(("fmt", "bad_row", "message"), [
    ("chat", {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  \n"}]},
     "field 'messages[1].content' is empty (assistant messages need text or tool_calls)"),
    ("chat", {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "Hello"}]},
     "field 'messages[0].content' is empty"),
    ("chat", {"messages": [{"role": "user"}, {"role": "assistant", "content": "Hello"}]},
     "field 'messages[0].content' is missing"),
    ("completion", {"prompt": "Q", "completion": " "}, "field 'completion' is empty"),
    ("alpaca", {"instruction": "Say hi", "input": "", "output": ""}, "field 'output' is empty"),
    ("preference", {"prompt": [{"role": "user", "content": "Q"}], "chosen": "A",
                    "rejected": [{"role": "assistant", "content": ""}]}, "field 'rejected[0].content' is empty"),
])
def test_empty_content_is_an_error(tmp_path, fmt, bad_row, message):
    path = write_jsonl(tmp_path / "d.jsonl", [bad_row])
    with pytest.raises(DataFormatError, match=rf"^{re.escape(f'{path}:1: {message}')}"):
        load(path, fmt, "pair" if fmt == "preference" else "chat")


def test_a_tool_call_message_may_have_no_text(tmp_path):
    call = {"type": "function", "function": {"name": "get_time", "arguments": {}}}
    row = {"messages": [{"role": "user", "content": "Time?"}, {"role": "assistant", "content": "", "tool_calls": [call]},
                        {"role": "tool", "content": "12:00"}, {"role": "assistant", "content": "It is noon."}]}
    rows, _ = load(write_jsonl(tmp_path / "d.jsonl", [row]), "chat")
    assert rows[0]["messages"][1]["tool_calls"] == [call]


def test_bytes_that_are_not_utf8_name_file_line_and_column(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "ok", "completion": "fine"}\n\n{"prompt": "caf\xe9", "completion": "x"}\n')
    with pytest.raises(DataFormatError, match=rf"^{re.escape(str(path))}:3: bytes that are not UTF-8 at byte column 16 "
                                              r"\(e9\): save the file as UTF-8"):
        read_rows(path)
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n  {"prompt": "ok", "completion": "fine"},\n  {"prompt": "\xff"}\n]\n')
    with pytest.raises(DataFormatError, match=rf"^{re.escape(str(path))}:3: bytes that are not UTF-8 at byte column 15"):
        read_rows(path)


def test_a_byte_order_mark_is_not_an_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a", "completion": "b"}\n')
    assert read_rows(path) == [{"prompt": "a", "completion": "b", "_line": 1}]


# --- conversions between views, with counts ---------------------------------------------------------


PAIRS = [{"prompt": f"Q{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "id": f"p{i}"} for i in range(3)]


def test_conversions_keep_the_source_and_line_of_every_row(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    for view, per_row in (("chat", 1), ("pair", 1), ("unpaired", 2), ("prompt", 1)):
        rows, skipped = load(path, "preference", view)
        assert len(rows) == per_row * len(PAIRS) and not skipped, view
        assert [(r["_source"], r["_line"]) for r in rows] == [(str(path), i + 1) for i in range(3) for _ in range(per_row)]


def test_preference_to_chat_takes_the_chosen_side_and_to_unpaired_both():
    chat, _ = convert(PAIRS, "preference", "chat", "f")
    assert chat[0]["messages"] == [{"role": "user", "content": "Q0"}, {"role": "assistant", "content": "good 0"}]
    unpaired, _ = convert(PAIRS, "preference", "unpaired", "f")
    assert [(r["completion"][0]["content"], r["label"]) for r in unpaired[:2]] == [("good 0", True), ("bad 0", False)]
    prompts, _ = convert(PAIRS, "preference", "prompt", "f")
    assert prompts[2] == {"prompt": [{"role": "user", "content": "Q2"}], "id": "p2"}


def test_unpaired_to_chat_counts_the_rows_it_skips():
    rows = [{"prompt": "Q", "completion": c, "label": lab} for c, lab in (("A", True), ("B", False), ("C", False))]
    kept, skipped = convert(rows, "unpaired", "chat", "f")
    assert len(kept) == 1 and skipped == {"unpaired row with label false (not an SFT target)": 2}


@pytest.mark.parametrize(("fmt", "view", "method", "needs"), [
    ("alpaca", "pair", "dpo", "a chosen and a rejected answer per prompt"),
    ("chat", "unpaired", "kto", "labelled completions"),
    ("prompt", "chat", "sft", "rows with responses to learn from"),
    ("unpaired", "pair", "reward", "a chosen and a rejected answer per prompt"),
])
def test_an_impossible_conversion_names_the_data_config_and_the_method(fmt, view, method, needs):
    with pytest.raises(ValueError, match=rf"^data=mydata \(format {fmt}\) cannot feed method={method}: it needs {needs}"):
        check_conversion(fmt, view, "mydata", method)


def test_every_possible_conversion_passes_the_check():
    for fmt in ("chat", "alpaca", "completion", "preference", "unpaired", "prompt"):
        check_conversion(fmt, "prompt", "d", "grpo")
    check_conversion("preference", "pair", "ultrafeedback", "dpo")
    check_conversion("preference", "unpaired", "hh_rlhf", "kto")
    check_conversion("unpaired", "chat", "kto_mix", "sft")
    with pytest.raises(ValueError, match="data=d: data.format='sharegpt' is not a row format"):
        check_conversion("sharegpt", "chat", "d", "sft")
