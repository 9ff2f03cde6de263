"""The bundled task suite: row schema, the per-task content, the views and the rejected answers."""

from __future__ import annotations

import collections
import inspect
import json

import pytest

from llmft.data import tasks
from llmft.data.tasks import REFUSAL, SPLITS, assistant_text, policy, registry, splits, tool_call, verify
from llmft.data.templates import to_template_messages


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
    pools = policy.REQUESTS
    assert set(pools) == set(policy.ALLOWED) | set(policy.FORBIDDEN)
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
                assert r["refusal"] == (item_of[q] in policy.FORBIDDEN)
    train_items = {item_of[q] for q in _policy_requests(chat["train"])}
    test_items = {item_of[q] for q in _policy_requests(chat["test"])}
    assert train_items == test_items == set(pools)


def test_generators_share_one_signature():
    for task, gen in registry.GENERATORS.items():
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
            if p["task"] != "tool_call":
                assert "tool_calls" not in p["rejected"][0], p["id"]
            elif "tool_calls" not in p["rejected"][0]:  # a malformed call: its raw text
                assert isinstance(p["rejected"][0]["content"], str) and p["rejected"][0]["content"]


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



# --- malformed tool calls among the rejected answers ----------------------------------------


def _malformed_kind(pref: dict) -> str | None:
    """Which MALFORMATIONS entry wrote the rejected reply of a tool_call preference row (None for
    a well-formed wrong call)."""
    rejected = pref["rejected"][0]
    if "tool_calls" in rejected:
        return None
    ref = json.loads(pref["answer"])
    kinds = [k for k, fn in tool_call.MALFORMATIONS.items()
             if fn(ref["name"], ref["arguments"]) == rejected["content"]]
    assert len(kinds) == 1, (pref["id"], rejected)
    return kinds[0]


def _parses_as_the_call(text: str, ref: dict) -> bool:
    """Whether `text` is JSON of the reference call, checked here without the verifier."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    args = value.get("arguments") if isinstance(value, dict) else None
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return False
    return value.get("name") == ref["name"] and args == ref["arguments"]


def test_malformed_rejected_tool_calls_in_every_split(all_views):
    kinds_seen: collections.Counter = collections.Counter()
    n_rows = n_malformed = 0
    for split in SPLITS:
        prefs = [p for p in all_views[split]["preference"] if p["task"] == "tool_call"]
        kinds = collections.Counter(k for k in map(_malformed_kind, prefs) if k)
        assert sum(kinds.values()) >= 2 and len(kinds) >= 2, (split, kinds)
        kinds_seen += kinds
        n_rows, n_malformed = n_rows + len(prefs), n_malformed + sum(kinds.values())
    assert set(kinds_seen) == set(tool_call.MALFORMATIONS)
    assert 0.25 <= n_malformed / n_rows <= 0.34, (n_malformed, n_rows)


def test_malformed_rejected_calls_are_the_right_call_in_a_broken_form(all_views):
    for split in SPLITS:
        v = all_views[split]
        bad = {u["id"].removesuffix("-bad"): u for u in v["unpaired"] if not u["label"]}
        for p in v["preference"]:
            if p["task"] != "tool_call" or not _malformed_kind(p):
                continue
            rejected, ref = p["rejected"][0], json.loads(p["answer"])
            text = rejected["content"]
            assert set(rejected) == {"role", "content"} and rejected["role"] == "assistant"
            assert not _parses_as_the_call(text, ref), p["id"]
            assert not verify("tool_call", text, p["answer"]), p["id"]
            assert ref["name"] in text  # the right tool, only the form is broken
            assert bad[p["id"]]["completion"] == [rejected]
            # rendered for the model as that raw text
            rendered = to_template_messages(p["prompt"] + [rejected], p["tools"])
            assert rendered[-1] == {"role": "assistant", "content": text}


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_malformed_share_changes_only_rejected_tool_calls(monkeypatch, share):
    """The malformation draw has its own RNG: with it off (or always on) the chat rows, and so
    the chat and prompt files, are exactly the committed ones."""
    rows, rejected = splits.generate_all()
    monkeypatch.setattr(tool_call, "MALFORMED_SHARE", share)
    other_rows, other_rejected = splits.generate_all()
    assert other_rows == rows
    for split in SPLITS:
        for row_id, msg in rejected[split].items():
            other, is_tool_call = other_rejected[split][row_id], row_id.startswith("tool_call-")
            if is_tool_call:
                assert ("tool_calls" in other) == (share == 0.0), row_id
            if not is_tool_call or ("tool_calls" in msg and "tool_calls" in other):
                assert other == msg, row_id  # the same wrong answer as before
    monkeypatch.setattr(splits, "_CACHE", (other_rows, other_rejected))
    committed = {p.name: p.read_bytes() for p in tasks.BUNDLED_DIR.glob("*.jsonl")}
    for name, data in tasks.render_files().items():
        if name.startswith(("chat_", "prompt_")):
            assert data == committed[name], name
        else:
            assert data != committed[name], name
