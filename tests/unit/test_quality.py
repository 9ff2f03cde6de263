"""Data quality: content text, exact and near-duplicate removal, contamination of eval rows."""
from __future__ import annotations

import sys

import pytest

from llmft.data import quality, tasks
from llmft.data.quality import (
    content_text,
    contamination,
    exact_duplicates,
    jaccard,
    near_duplicates,
    shingles,
)
from llmft.data.rows import DataSpec

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def chat(*turns: str, system: str | None = None, **extra) -> dict:
    """A chat row of alternating user/assistant turns."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    return {"messages": messages, **extra}


def words(count: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


# -- content ------------------------------------------------------------------------------------


def test_content_text_keeps_user_and_assistant_text_normalised_and_leaves_out_template_and_tools():
    row = {
        "messages": [
            {"role": "system", "content": "You can call tools. SECRET system words"},
            {"role": "user", "content": "  What is the\n weather in  PARIS? "},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": '{"temp": 21, "unit": "C"}'},
            {"role": "assistant", "content": "It is ２１ °C."},  # NFKC folds the full-width digits
        ],
        "tools": TOOLS,
    }
    assert content_text(row) == ('what is the weather in paris?\n'
                                 '{"name": "get_weather", "arguments": {"city": "paris"}}\n'
                                 'it is 21 °c.')
    assert content_text(row, with_system=True).startswith("you can call tools. secret system words\nwhat is")


def test_content_text_of_every_view():
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 3."}]
    answer = {"role": "assistant", "content": "5"}
    assert content_text({"prompt": prompt, "chosen": [answer], "rejected": [{"role": "assistant", "content": "6"}]}) \
        == "add 2 and 3.\n5\n6"
    assert content_text({"prompt": prompt, "completion": [answer], "label": False}) == "add 2 and 3.\n5"
    # a prompt row with its reference answer reads like the chat row that gives that answer
    assert content_text({"prompt": prompt, "answer": "5"}) == content_text({"messages": prompt + [answer]})
    assert content_text({"prompt": "Add 2 and 3."}) == "add 2 and 3."
    with pytest.raises(ValueError, match="line 7: not a row of a known view"):
        content_text({"text": "x", "_line": 7})


# -- exact dedup --------------------------------------------------------------------------------


def test_exact_duplicates_keep_the_first_and_ignore_case_whitespace_and_system_prompt():
    rows = [
        chat("Hello there", "Hi!"),
        chat("Name a colour", "Blue"),
        chat("  HELLO   there", "hi!", system="You are a pirate."),  # same content as row 0
        chat("Hello there", "Hi!!"),  # the answer differs
        chat("Hello there", "Hi!"),
        chat("Hello", "there Hi!"),  # same words, another turn boundary
    ]
    assert exact_duplicates(rows) == [2, 4]
    assert exact_duplicates(rows, with_system=True) == [4]
    assert exact_duplicates([]) == []


# -- near dedup ---------------------------------------------------------------------------------


def test_shingles_and_jaccard_by_hand():
    assert shingles("a b c d", 2) == {"a b", "b c", "c d"}
    assert shingles("a b", 5) == {"a b"}  # shorter than a shingle: one shingle
    assert shingles("", 5) == set()
    assert jaccard({"a b", "b c", "c d"}, {"a b", "b c", "c x"}) == pytest.approx(2 / 4)
    assert jaccard(set(), set()) == 1.0


def test_near_duplicates_find_a_similar_pair_and_not_a_different_one():
    pytest.importorskip("datasketch")
    base = words(20)
    last_changed = base[:-1] + ["other"]  # 16 word 5-grams each, 15 shared: Jaccard 15/17 = 0.88
    middle_changed = base[:10] + ["other"] + base[11:]  # 5 of 16 5-grams differ: Jaccard 11/21 = 0.52
    assert jaccard(shingles(" ".join(base), 5), shingles(" ".join(last_changed), 5)) == pytest.approx(15 / 17)
    assert jaccard(shingles(" ".join(base), 5), shingles(" ".join(middle_changed), 5)) == pytest.approx(11 / 21)
    rows = [chat(" ".join(base)), chat(" ".join(words(20, "v"))), chat(" ".join(middle_changed)),
            chat(" ".join(last_changed)), chat(" ".join(base).upper())]
    assert near_duplicates(rows, threshold=0.85) == [3, 4]
    assert near_duplicates(rows, threshold=0.5) == [2, 3, 4]
    assert near_duplicates(rows, threshold=0.85) == near_duplicates(rows, threshold=0.85)  # seeded


def test_near_duplicates_without_datasketch_say_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasketch", None)  # import datasketch -> ImportError
    with pytest.raises(ImportError, match=r"data.dedup=near needs: pip install -e '\.\[quality\]'"):
        near_duplicates([chat("a", "b")], threshold=0.85)


# -- contamination ------------------------------------------------------------------------------


def test_ngram_overlap_fraction_by_hand():
    train = [chat("the quick brown fox", "jumps over the lazy dog", id="t-0")]
    # 3-grams of the eval row: "the quick brown" (in training), "quick brown fox" (in), "brown fox sleeps" (not)
    evals = {"val": [chat("The quick", "brown fox sleeps", id="v-0"), chat("lazy dog", id="v-1")]}
    report = contamination(train, evals, n=3, threshold=0.6)
    val = report.splits["val"]
    assert (val.rows, val.short_rows, val.exact) == (2, 1, [])  # "lazy dog" is 2 words: exact match only
    assert val.ngram == [("id v-0", pytest.approx(2 / 3))]
    assert (val.mean_overlap, val.max_overlap) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert report.failed
    assert not contamination(train, evals, n=3, threshold=0.7).failed
    # n-grams run across turns: "fox jumps over" spans the user/assistant boundary
    assert contamination(train, {"val": [chat("fox jumps over")]}, n=3, threshold=1.0).splits["val"].ngram == [
        ("row 0", 1.0)]


def test_contamination_fails_on_an_eval_row_equal_to_a_training_row_and_says_how_to_downgrade():
    train = [chat(f"question {i} about topic {i}", f"answer {i}", id=f"t-{i}") for i in range(8)]
    val = [chat("An unrelated question", "no", _line=1)]
    val += [chat(f"Question {i} about topic {i}", f"answer {i}", system="other system", _line=i + 2) for i in range(7)]
    report = contamination(train, {"val": val, "test": [chat("fresh row", "yes", id="x")]}, n=13, threshold=0.5)
    assert report.failed
    assert report.splits["val"].exact[:2] == [("line 2", "id t-0"), ("line 3", "id t-1")]
    assert len(report.splits["val"].exact) == 7 and report.splits["val"].short_rows == 8
    assert not report.splits["test"].contaminated
    message = report.message()
    assert "val: 7 of 8 rows equal a training row (line 2 = train id t-0, line 3 = train id t-1" in message
    assert "line 6 = train id t-4, and 2 more)" in message
    assert "test" not in message.split("\n", 1)[1].split("to go on")[0]
    assert "data.contamination=warn" in message
    card = report.as_dict()
    assert card["failed"] and card["ngram"] == 13 and card["train_rows"] == 8
    assert card["splits"]["val"]["exact_matches"] == 7
    assert card["splits"]["val"]["exact"][0] == {"row": "line 2", "train_row": "id t-0"}
    assert card["splits"]["test"] == {"rows": 1, "short_rows": 1, "exact_matches": 0, "ngram_matches": 0,
                                      "mean_overlap": 0.0, "max_overlap": 0.0, "exact": [], "ngram": []}


def test_contamination_rejects_bad_settings():
    with pytest.raises(ValueError, match="data.contamination_ngram=0"):
        contamination([], {}, n=0, threshold=0.5)
    with pytest.raises(ValueError, match="data.contamination_threshold=0"):
        contamination([], {}, n=8, threshold=0.0)
    assert not contamination([], {"val": [chat("a b c")]}, n=2, threshold=0.5).failed


def test_bundled_suite_passes_at_the_default_settings_and_fails_with_a_training_row_in_validation():
    spec = DataSpec()
    train, val, test = (tasks.load_bundled("chat", s) for s in ("train", "val", "test"))
    report = contamination(train, {"val": val, "test": test}, spec.contamination_ngram, spec.contamination_threshold)
    assert not report.failed, report.message()
    assert "no contamination" in report.message()
    leaked = contamination(train, {"val": val + [train[5]]}, spec.contamination_ngram, spec.contamination_threshold)
    assert leaked.splits["val"].exact == [(f"id {train[5]['id']}", f"id {train[5]['id']}")]
    assert leaked.failed


def test_ngram_hashes_windows_and_owners():
    grams, owner = quality.ngram_hashes([["a", "b", "c"], ["a"], ["x", "a", "b"]], 2)
    assert owner.tolist() == [0, 0, 2, 2]
    assert grams[0] == grams[3] and len(set(grams.tolist())) == 3  # "a b" twice; "b c", "x a" differ
