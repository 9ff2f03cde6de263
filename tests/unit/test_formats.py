"""Row formats: reading, validation errors that name file/line/field, conversion to the chat view."""
from __future__ import annotations

import json

import pytest

from llmft.data.formats import DataFormatError, convert, read_rows, to_chat


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_rows_carry_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert [(r["a"], r["_line"]) for r in read_rows(path)] == [(1, 1), (2, 3)]


def test_malformed_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DataFormatError, match=rf"^{path}:2: malformed JSON"):
        read_rows(path)


def test_non_object_row_and_missing_file(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"a": 1}, [1, 2]])
    with pytest.raises(DataFormatError, match=rf"{path}:2: a row must be a JSON object"):
        read_rows(path)
    with pytest.raises(FileNotFoundError, match="nope.jsonl does not exist"):
        read_rows(tmp_path / "nope.jsonl")


def test_json_list_and_csv(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([{"prompt": "p", "completion": "c"}]))
    assert read_rows(tmp_path / "d.json")[0]["_line"] == 1
    (tmp_path / "d.csv").write_text("instruction,input,output\nSay hi,,hi\nAdd,1 2,3\n")
    rows = read_rows(tmp_path / "d.csv")
    assert [r["_line"] for r in rows] == [2, 3] and rows[1]["output"] in ("3", 3)


def test_alpaca_to_chat():
    chat = to_chat({"instruction": "Add", "input": "1 2", "output": "3", "_line": 1}, "alpaca", "f")
    assert chat["messages"] == [{"role": "user", "content": "Add\n\n1 2"}, {"role": "assistant", "content": "3"}]


def test_completion_and_preference_to_chat():
    chat = to_chat({"prompt": "Q", "completion": "A"}, "completion", "f")
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant"]
    pref = to_chat({"prompt": [{"role": "user", "content": "Q"}], "chosen": "good", "rejected": "bad"}, "preference", "f")
    assert pref["messages"][-1] == {"role": "assistant", "content": "good"}


def test_unpaired_keeps_good_rows_and_counts_the_rest():
    rows = [{"prompt": "Q", "completion": "A", "label": True}, {"prompt": "Q", "completion": "B", "label": False}]
    kept, dropped = convert(rows, "unpaired", "chat", "f")
    assert len(kept) == 1 and sum(dropped.values()) == 1


def test_errors_name_the_field():
    with pytest.raises(DataFormatError, match=r"f:7: missing field 'output'"):
        to_chat({"instruction": "x", "_line": 7}, "alpaca", "f")
    with pytest.raises(DataFormatError, match=r"f:3: field 'messages\[1\]\.role' must be one of"):
        to_chat({"messages": [{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}], "_line": 3}, "chat", "f")
    with pytest.raises(DataFormatError, match="no assistant turn"):
        to_chat({"messages": [{"role": "user", "content": "x"}]}, "chat", "f")
    with pytest.raises(DataFormatError, match="data.format=prompt has no responses"):
        to_chat({"prompt": "x"}, "prompt", "f")


def test_every_view_holds_out_the_same_rows_of_a_file(tmp_path):
    """The split is taken on the file's rows, before conversion: KTO's validation rows (two per
    preference row) and the chat rows evaluation reads come from the same held-out rows."""
    import json

    from llmft.data.rows import DataSpec, load_rows

    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(20)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = DataSpec(source="file", path=str(path), format="preference", val_fraction=0.25)
    prompts = {view: {r["prompt"][0]["content"] if view != "chat" else r["messages"][0]["content"]
                      for r in load_rows(spec, view, seed=3).val} for view in ("chat", "pair", "unpaired")}
    assert len(prompts["chat"]) == 5 and prompts["chat"] == prompts["pair"] == prompts["unpaired"]
