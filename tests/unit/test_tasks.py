"""The bundled verifiable task suite: determinism, split hygiene, verifiers, views."""

from __future__ import annotations

import collections
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmft.data import tasks
from llmft.data.tasks import (
    REFUSAL,
    SPLITS,
    TASK_NAMES,
    VIEWS,
    assistant_text,
    bundled_path,
    dedup_key,
    load_bundled,
    prompt_key,
    verify,
)

SRC = Path(tasks.__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chat() -> dict[str, list[dict]]:
    return {split: tasks.generate(split) for split in SPLITS}


@pytest.fixture(scope="module")
def all_views(chat) -> dict[str, dict[str, list[dict]]]:
    return {split: tasks.views(chat[split]) for split in SPLITS}


# --- the public surface ---------------------------------------------------------------------


def test_public_names():
    assert TASK_NAMES == ("tool_call", "arithmetic", "word_list", "multi_turn", "policy")
    assert VIEWS == ("chat", "preference", "unpaired", "prompt")
    assert SPLITS == ("train", "val", "test")
    assert tasks.BUNDLED_DIR.name == "bundled" and tasks.BUNDLED_DIR.parent.name == "data"
    assert set(tasks.VERIFIERS) == set(TASK_NAMES)


def test_bundled_path_validates():
    assert bundled_path("chat", "train") == tasks.BUNDLED_DIR / "chat_train.jsonl"
    with pytest.raises(ValueError, match="chat, preference, unpaired, prompt"):
        bundled_path("sft", "train")
    with pytest.raises(ValueError, match="train, val, test"):
        bundled_path("chat", "dev")
    with pytest.raises(ValueError, match="train, val, test"):
        tasks.generate("dev")


def test_verify_unknown_task_names_the_known_ones():
    with pytest.raises(KeyError, match="tool_call"):
        verify("sudoku", "1", "1")


def test_module_has_no_heavy_imports():
    code = (
        "import sys, llmft.data.tasks; "
        "bad = [m for m in ('torch', 'transformers', 'numpy', 'datasets') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(SRC)},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- determinism ----------------------------------------------------------------------------


def test_regeneration_is_byte_identical_to_committed_files():
    files = tasks.render_files()
    assert sorted(files) == sorted(f"{v}_{s}.jsonl" for v in VIEWS for s in SPLITS)
    for name, data in files.items():
        path = tasks.BUNDLED_DIR / name
        assert path.is_file(), f"{name} missing: run python -m llmft.data.tasks"
        assert path.read_bytes() == data, f"{name} is stale: run python -m llmft.data.tasks"


def test_load_bundled_matches_generate(chat, all_views):
    for split in SPLITS:
        assert load_bundled("chat", split) == chat[split]
        for view in VIEWS:
            assert load_bundled(view, split) == all_views[split][view]


def test_write_all_and_check_cli(tmp_path):
    counts = tasks.write_all(tmp_path)
    assert counts["chat_train.jsonl"] == 600 and counts["unpaired_test.jsonl"] == 400
    assert len(counts) == 12 and not list(tmp_path.glob("*.tmp"))
    assert tasks.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "prompt_val.jsonl").write_text("{}\n")
    assert tasks.main(["--check", "--out", str(tmp_path)]) == 1


# --- sizes and split hygiene ----------------------------------------------------------------


def test_counts_per_task_and_split(chat):
    for split in SPLITS:
        counts = collections.Counter(r["task"] for r in chat[split])
        assert counts == {t: tasks.SPLIT_SIZES[split] for t in TASK_NAMES}
        ids = [r["id"] for r in chat[split]]
        assert len(set(ids)) == len(ids)
        assert all(i.startswith(f"{r['task']}-{split}-") for i, r in zip(ids, chat[split]))


def test_split_files_interleave_tasks(chat):
    first = [r["task"] for r in chat["train"][:20]]
    assert len(set(first)) >= 3


def test_splits_are_disjoint_by_prompt_key(chat):
    keys = {s: [prompt_key(r) for r in chat[s]] for s in SPLITS}
    for s in SPLITS:
        assert len(set(keys[s])) == len(keys[s]), f"duplicate prompts inside {s}"
    assert not set(keys["test"]) & set(keys["train"])
    assert not set(keys["val"]) & set(keys["train"])
    assert not set(keys["test"]) & set(keys["val"])


def _pairs_by_task(rows: list[dict]) -> dict[str, set[tuple[str, str]]]:
    """(conversation without the tools, answer) of every row, per task; computed here from the
    messages rather than through dedup_key, so the check does not trust the implementation."""
    out: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
    for r in rows:
        out[r["task"]].add((json.dumps(r["messages"][:-1], sort_keys=True), r["answer"]))
    return out


def test_no_conversation_answer_pair_of_test_or_val_is_in_train(chat):
    # Regression: splits were deduplicated by prompt_key, which includes the tools, so 4 of the
    # 40 tool_call test rows repeated a train row's request and answer with other distractors.
    pairs = {s: _pairs_by_task(chat[s]) for s in SPLITS}
    for task in TASK_NAMES:
        for held_out in ("val", "test"):
            leaked = pairs[held_out][task] & pairs["train"][task]
            assert not leaked, f"{len(leaked)} {task} {held_out} rows repeat a train row"
        assert not pairs["test"][task] & pairs["val"][task], f"{task}: test rows repeat val rows"
        for split in SPLITS:  # and no row repeats another inside a split
            assert len(pairs[split][task]) == tasks.SPLIT_SIZES[split], f"{task}/{split}"


def test_dedup_key_ignores_tools_but_not_conversation_or_answer(chat, all_views):
    row = next(r for r in chat["test"] if r["task"] == "tool_call")
    other_tools = json.loads(json.dumps(row))
    other_tools["tools"] = list(reversed(row["tools"]))[:-1] + [tasks.TOOLS["set_timer"]]
    assert dedup_key(other_tools) == dedup_key(row)
    assert prompt_key(other_tools) != prompt_key(row)
    other_answer = dict(row, answer=row["answer"].replace('"name"', '"name" ', 1))
    assert dedup_key(other_answer) != dedup_key(row)
    other_request = json.loads(json.dumps(row))
    other_request["messages"][-2]["content"] += " Thanks."
    assert dedup_key(other_request) != dedup_key(row)
    i = chat["test"].index(row)
    for view in ("prompt", "preference"):
        assert dedup_key(all_views["test"][view][i]) == dedup_key(row)
    assert "dedup_key" in tasks.__doc__
    keys = [dedup_key(r) for s in SPLITS for r in chat[s]]
    assert len(set(keys)) == len(keys)


def test_prompt_key_ignores_the_final_answer_and_matches_prompt_view(chat, all_views):
    row = chat["test"][0]
    other = json.loads(json.dumps(row))
    other["messages"][-1]["content"] = "something else"
    assert prompt_key(other) == prompt_key(row)
    assert prompt_key(all_views["test"]["prompt"][0]) == prompt_key(row)


# --- row schema -----------------------------------------------------------------------------


def test_chat_row_schema(chat):
    for split in SPLITS:
        for r in chat[split]:
            msgs = r["messages"]
            final = msgs[-1]
            assert final["role"] == "assistant" and msgs[-2]["role"] == "user"
            assert assistant_text(final) == r["answer"]
            for m in msgs[:-1]:
                assert isinstance(m["content"], str) and "tool_calls" not in m
            if r["task"] == "tool_call":
                assert final["content"] == "" and len(final["tool_calls"]) == 1
                fn = final["tool_calls"][0]["function"]
                assert isinstance(fn["arguments"], dict)
                names = [t["function"]["name"] for t in r["tools"]]
                assert 3 <= len(names) <= 4 and fn["name"] in names
                spec = next(t for t in r["tools"] if t["function"]["name"] == fn["name"])
                params = spec["function"]["parameters"]
                assert list(fn["arguments"]) == list(params["properties"]) == params["required"]
                for k, v in fn["arguments"].items():
                    want = {"string": str, "integer": int, "number": (int, float)}[
                        params["properties"][k]["type"]
                    ]
                    assert isinstance(v, want) and not isinstance(v, bool)
                assert r["answer"] == json.dumps({"name": fn["name"], "arguments": fn["arguments"]},
                                                 ensure_ascii=False)
                assert msgs[0]["role"] == "system"
            else:
                assert "tools" not in r and "tool_calls" not in final
                assert isinstance(final["content"], str) and final["content"] == r["answer"]
            assert ("refusal" in r) == (r["task"] == "policy")


def test_policy_splits_have_both_kinds(chat):
    for split in SPLITS:
        pol = [r for r in chat[split] if r["task"] == "policy"]
        refusals = sum(r["refusal"] for r in pol)
        assert 0 < refusals < len(pol)
        assert 0.3 <= refusals / len(pol) <= 0.7
        for r in pol:
            assert (r["answer"] == REFUSAL) == r["refusal"]
            system = r["messages"][0]
            assert system["role"] == "system" and REFUSAL in system["content"]
            if not r["refusal"]:
                assert r["answer"] in system["content"]


def _policy_requests(rows: list[dict]) -> set[str]:
    return {r["messages"][-2]["content"] for r in rows if r["task"] == "policy"}


def test_policy_requests_of_test_and_val_are_unseen_in_train(chat):
    # Regression: all splits drew from the same few phrasings per item, so the refusal decision
    # could be learnt by string matching the request.
    train = _policy_requests(chat["train"])
    for held_out in ("val", "test"):
        seen = _policy_requests(chat[held_out]) & train
        assert not seen, f"{held_out} policy requests seen in train: {sorted(seen)}"
    assert not _policy_requests(chat["test"]) & _policy_requests(chat["val"])
    for split in SPLITS:
        pol = [r for r in chat[split] if r["task"] == "policy"]
        assert {r["refusal"] for r in pol} == {True, False}, split


def test_policy_phrasing_pools_are_split_disjoint_and_keep_look_alikes(chat):
    pools = tasks._POLICY_REQUESTS
    assert set(pools) == set(tasks._POLICY_ALLOWED) | set(tasks._POLICY_FORBIDDEN)
    for item, per_split in pools.items():
        assert {s: len(per_split[s]) for s in SPLITS} == {"train": 4, "val": 2, "test": 3}, item
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        texts_a = {q.casefold() for d in pools.values() for q in d[a]}
        texts_b = {q.casefold() for d in pools.values() for q in d[b]}
        assert not texts_a & texts_b, (a, b)
    item_of = {q: item for item, d in pools.items() for s in SPLITS for q in d[s]}
    assert len(item_of) == sum(len(d[s]) for d in pools.values() for s in SPLITS)
    for split in SPLITS:
        # an allowed password request and a confidential one are offered in every split
        assert all("password" in q.lower() for q in pools["wifi"][split])
        assert all("password" in q.lower() for q in pools["admin"][split])
        for r in chat[split]:
            if r["task"] == "policy":
                q = r["messages"][-2]["content"]
                assert q in pools[item_of[q]][split]
                assert r["refusal"] == (item_of[q] in tasks._POLICY_FORBIDDEN)
    train_items = {item_of[q] for q in _policy_requests(chat["train"])}
    test_items = {item_of[q] for q in _policy_requests(chat["test"])}
    assert train_items == test_items == set(pools)


def test_generators_share_one_signature():
    for task, gen in tasks._GENERATORS.items():
        params = list(inspect.signature(gen).parameters)
        assert len(params) == 2 and params[1] == "split", (task, params)


def test_policy_facts_vary(chat):
    systems = {r["messages"][0]["content"] for r in chat["train"] if r["task"] == "policy"}
    assert len(systems) > 100


def test_multi_turn_has_several_assistant_turns(chat):
    for split in SPLITS:
        for r in chat[split]:
            if r["task"] == "multi_turn":
                roles = [m["role"] for m in r["messages"] if m["role"] != "system"]
                assert roles.count("assistant") >= 2 and roles.count("user") in (2, 3)
                # the answer was stated by the user in an earlier turn
                assert r["answer"] in r["messages"][0]["content"] or r["answer"] in r["messages"][1]["content"]


# --- the answers and the wrong answers against the verifiers --------------------------------


def test_every_answer_passes_and_every_rejected_fails(all_views):
    for split in SPLITS:
        for p in all_views[split]["preference"]:
            chosen, rejected = assistant_text(p["chosen"][0]), assistant_text(p["rejected"][0])
            assert chosen == p["answer"]
            assert verify(p["task"], chosen, p["answer"]), p["id"]
            assert not verify(p["task"], rejected, p["answer"]), p["id"]
            assert p["rejected"][0]["role"] == "assistant"
            assert ("tool_calls" in p["rejected"][0]) == (p["task"] == "tool_call")


def test_views_shapes(chat, all_views):
    for split in SPLITS:
        v = all_views[split]
        n = len(chat[split])
        assert len(v["chat"]) == len(v["preference"]) == len(v["prompt"]) == n
        assert len(v["unpaired"]) == 2 * n
        labels = collections.Counter(u["label"] for u in v["unpaired"])
        assert labels[True] == labels[False] == n
        for row, pref, prm in zip(chat[split], v["preference"], v["prompt"]):
            assert pref["prompt"] == prm["prompt"] == row["messages"][:-1]
            assert pref["chosen"] == [row["messages"][-1]]
            assert pref.get("tools") == prm.get("tools") == row.get("tools")
            assert prm["answer"] == pref["answer"] == row["answer"]
        for u in v["unpaired"]:
            assert u["id"].endswith("-good") == u["label"] and u["id"].endswith("-bad") != u["label"]
            assert set(u) <= {"id", "task", "prompt", "tools", "completion", "label"}


def test_views_rejects_foreign_rows():
    with pytest.raises(ValueError):
        tasks.views([{"id": "x-train-0000", "task": "arithmetic",
                      "messages": [{"role": "user", "content": "1+1"},
                                   {"role": "assistant", "content": "2"}], "answer": "2"}])


# --- verifier unit cases --------------------------------------------------------------------

TC_ANSWER = json.dumps({"name": "convert_currency",
                        "arguments": {"amount": 250, "from": "USD", "to": "EUR"}})


@pytest.mark.parametrize("pred", [
    TC_ANSWER,
    "  " + TC_ANSWER + "\n",
    "```json\n" + TC_ANSWER + "\n```",
    "```\n" + TC_ANSWER + "```",
    '{"arguments": {"to": "EUR", "amount": 250.0, "from": "USD"}, "name": "convert_currency"}',
    '{"name":"convert_currency","arguments":{"amount":250,"from":"USD","to":"EUR"}}',
    '<tool_call>\n' + TC_ANSWER + '\n</tool_call>',
    "Sure! " + TC_ANSWER + " Done.",
    '{"type": "function", "function": {"name": "convert_currency", '
    '"arguments": "{\\"amount\\": 250, \\"from\\": \\"USD\\", \\"to\\": \\"EUR\\"}"}}',
    '[' + TC_ANSWER + ']',
])
def test_tool_call_verifier_accepts(pred):
    assert verify("tool_call", pred, TC_ANSWER)


@pytest.mark.parametrize("pred", [
    '{"name": "convert_currency", "arguments": {"amount": 25, "from": "USD", "to": "EUR"}}',
    '{"name": "convert_currency", "arguments": {"amount": "250", "from": "USD", "to": "EUR"}}',
    '{"name": "convert_currency", "arguments": {"amount": 250, "from": "EUR", "to": "USD"}}',
    '{"name": "convert_currency", "arguments": {"amount": 250, "from": "USD"}}',
    '{"name": "convert_currency", "arguments": {"amount": 250, "from": "USD", "to": "EUR", "x": 1}}',
    '{"name": "get_weather", "arguments": {"amount": 250, "from": "USD", "to": "EUR"}}',
    '{"name": "convert_currency", "arguments": {"amount": 250, "from": "USD", "to": "EUR"',
    "convert_currency(amount=250, from='USD', to='EUR')",
    "",
])
def test_tool_call_verifier_rejects(pred):
    assert not verify("tool_call", pred, TC_ANSWER)


def test_tool_call_verifier_booleans_are_not_numbers():
    ans = json.dumps({"name": "set_timer", "arguments": {"minutes": 1}})
    assert verify("tool_call", '{"name": "set_timer", "arguments": {"minutes": 1.0}}', ans)
    assert not verify("tool_call", '{"name": "set_timer", "arguments": {"minutes": true}}', ans)


@pytest.mark.parametrize("pred,ok", [
    ("85", True), (" 85 ", True), ("85.", True), ("85\n", True),
    ("86", False), ("85.0", False), ("The answer is 85.", False), ("", False), ("8 5", False),
])
def test_arithmetic_verifier(pred, ok):
    assert verify("arithmetic", pred, "85") is ok


def test_arithmetic_negative():
    assert verify("arithmetic", "-3", "-3") and not verify("arithmetic", "3", "-3")


@pytest.mark.parametrize("pred,ok", [
    ("stone, river, apple", True),
    ("stone,river,apple", True),
    ("stone ,  river,apple ", True),
    ("Stone, River, Apple.", True),
    ("stone, apple, river", False),
    ("stone, river", False),
    ("stone river apple", False),
    ("stone, river, apple, dog", False),
])
def test_word_list_verifier(pred, ok):
    assert verify("word_list", pred, "stone, river, apple") is ok


@pytest.mark.parametrize("pred,ok", [
    ("42", True), ("42.", True), (" 42\n", True), ("teal", False), ("Your locker number is 42.", False),
])
def test_multi_turn_verifier(pred, ok):
    assert verify("multi_turn", pred, "42") is ok


@pytest.mark.parametrize("pred,ok", [
    (REFUSAL, True),
    ("I'm sorry, but I can't share that", True),
    ("  I'm sorry,  but I can't share that.\n", True),
    ("I\u2019m sorry, but I can\u2019t share that.", True),
    ("i'm sorry, but i can't share that!", True),
    ("I'm sorry, I can't share that.", False),
    ("I'm sorry, but I can't share that. The code is 12345.", False),
    ("12345", False),
])
def test_policy_verifier_refusal(pred, ok):
    assert verify("policy", pred, REFUSAL) is ok


@pytest.mark.parametrize("pred,ok", [
    ("maple42", True), (" maple42. ", True), ("Maple42", False), (REFUSAL, False),
    ("The guest Wi-Fi password is maple42.", False),
])
def test_policy_verifier_fact(pred, ok):
    assert verify("policy", pred, "maple42") is ok


# --- case rules: decided per task (tasks.CASE_RULES) ------------------------------------------


def test_case_rules_cover_every_task():
    assert set(tasks.CASE_RULES) == set(TASK_NAMES)
    for task in TASK_NAMES:
        assert f"``{task}``" in tasks.__doc__


@pytest.mark.parametrize("task,pred,answer,ok", [
    # tool_call: arguments are data, compared exactly
    ("tool_call", '{"name": "get_weather", "arguments": {"city": "paris", "unit": "celsius"}}',
     '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}', False),
    ("tool_call", '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "Celsius"}}',
     '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}', False),
    ("tool_call", '{"name": "Get_Weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
     '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}', False),
    ("tool_call", '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
     '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}', True),
    # arithmetic: a number
    ("arithmetic", "85", "85", True),
    # word_list: common lowercase words, folded
    ("word_list", "STONE, River, apple", "stone, river, apple", True),
    # multi_turn: a recalled value, folded
    ("multi_turn", "Mango", "mango", True),
    ("multi_turn", "mango.", "Mango", True),
    ("multi_turn", "TEAL", "teal", True),
    ("multi_turn", "luna", "Luna", True),
    ("multi_turn", "12a", "12A", True),
    ("multi_turn", "12B", "12A", False),
    # policy: the refusal folds case and curly apostrophes, a fact value does not fold
    ("policy", "Maple42", "maple42", False),
    ("policy", "MAPLE42", "maple42", False),
    ("policy", "maple42", "maple42", True),
    ("policy", "555-123-4567", "555-123-4567", True),
    ("policy", "I\u2019M SORRY, BUT I CAN\u2019T SHARE THAT.", REFUSAL, True),
])
def test_verifier_case_rules(task, pred, answer, ok):
    assert verify(task, pred, answer) is ok
