"""Weighted mixtures and the dropped-fraction stop, as pure functions."""
from __future__ import annotations

from collections import Counter

import pytest

from llmft.data.datamodule import check_dropped_fraction
from llmft.data.rows import mix


def rows(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}{i}"} for i in range(n)]


def test_default_size_repeats_no_row():
    drawn, report = mix([rows("a", 18), rows("b", 36)], [1, 3], ["a", "b"], None, seed=0)
    # shares 1/4 and 3/4: b (36 / 0.75 = 48) is the scarcer for its share, so 48 rows: 12 of a, all 36 of b
    assert (report["a"]["drawn"], report["b"]["drawn"]) == (12, 36)
    assert len(drawn) == 48 and len({r["id"] for r in drawn}) == 48
    assert Counter(r["id"][0] for r in drawn) == {"a": 12, "b": 36}


def test_larger_size_repeats_whole_copies_then_samples():
    drawn, report = mix([rows("a", 4), rows("b", 10)], [1, 1], ["a", "b"], 18, seed=1)
    ids = Counter(r["id"] for r in drawn)
    assert sum(1 for k in ids if k.startswith("a")) == 4 and all(ids[f"a{i}"] >= 2 for i in range(4))  # 9 = 2 x 4 + 1
    assert report["a"] == {"weight": 1.0, "share": 0.5, "available": 4, "drawn": 9, "repeated": 5}
    assert drawn == mix([rows("a", 4), rows("b", 10)], [1, 1], ["a", "b"], 18, seed=1)[0]  # seeded


def test_bad_weights_and_empty_sources_are_named():
    with pytest.raises(ValueError, match="weights must be positive"):
        mix([rows("a", 2)], [0], ["a"], None, 0)
    with pytest.raises(ValueError, match="no training rows left in b.jsonl"):
        mix([rows("a", 2), []], [1, 1], ["a.jsonl", "b.jsonl"], None, 0)


def test_dropped_fraction_compounds_across_stages():
    # 10 of 100 read are duplicates, then 1 of the 9 sampled rows is truncated away: 1 - 0.9 * 8/9 = 20%
    before, encoding = Counter({"exact duplicate of an earlier row": 10}), Counter({"truncated": 1})
    check_dropped_fraction("train", before, 100, encoding, 9, 0.2 + 1e-9)
    with pytest.raises(ValueError, match=r"20.0% of the train rows dropped.*10 exact duplicate.*1 truncated; of 100 rows"):
        check_dropped_fraction("train", before, 100, encoding, 9, 0.19)
