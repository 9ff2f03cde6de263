"""The data pipeline end to end on the tiny model: the tokenisation cache, the data card, the
contamination check, the dropped-fraction stop and weighted mixtures."""
from __future__ import annotations

import json

import pytest

from llmft.data.checks import ContaminationError
from llmft.train import run


def chat_row(i: int, reply_words: int = 6) -> dict:
    words = " ".join(f"w{(i * 7 + k) % 97}" for k in range(reply_words))
    return {"id": f"r{i}", "messages": [{"role": "user", "content": f"Question number {i}: list some words please."},
                                        {"role": "assistant", "content": f"Answer {i}: {words}."}]}


def write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


TINY = ("model=tiny", "trainer.max_steps=1", "evaluate=false", "data.batch_size=4")


def test_second_run_hits_the_tokenisation_cache(make_cfg, tmp_path):
    data = write_rows(tmp_path / "rows.jsonl", [chat_row(i) for i in range(24)])
    cards = []
    for name in ("first", "second"):
        cfg = make_cfg(*TINY, "data=file", f"data.path={data}", f"data.cache_dir={tmp_path / 'cache'}")
        cfg.paths.output_dir = str(tmp_path / name)
        run(cfg)
        cards.append(json.loads((tmp_path / name / "data_card.json").read_text()))
        assert json.loads((tmp_path / name / "run_card.json").read_text())["tokenisation_cache"] == cards[-1][
            "tokenisation_cache"]["outcome"]
    first, second = (card["tokenisation_cache"] for card in cards)
    assert (first["outcome"], first["hits"], first["misses"]) == ("miss", 0, 24)
    assert (second["outcome"], second["hits"], second["misses"]) == ("hit", 24, 0)
    assert cards[0]["examples"] == cards[1]["examples"] == {"train": 23, "val": 1}
    assert cards[0]["sources"][0]["read"] == 24 and len(cards[0]["sources"][0]["fingerprint"]) == 64


def test_cached_examples_equal_fresh_ones(smollm2_tokenizer, tmp_path):
    from llmft.data.cache import TokenCache
    from llmft.data.encoders import encode_rows
    from llmft.data.templates import ChatRenderer

    renderer = ChatRenderer(smollm2_tokenizer, 24)
    rows = [chat_row(i, reply_words=3 + 4 * i) for i in range(6)]
    rows.append({"messages": [{"role": "user", "content": "x " * 40}, {"role": "assistant", "content": "y"}]})
    fresh = encode_rows(rows, renderer)
    cache = TokenCache(tmp_path)
    assert cache.encode_rows(rows, renderer, "chat") == fresh  # encoded now
    again = TokenCache(tmp_path)
    assert again.encode_rows(rows, renderer, "chat") == fresh  # read back from disk, the dropped row too
    assert (again.stats.hits, again.stats.misses) == (7, 0)
    changed = [*rows[:-1], chat_row(99)]
    third = TokenCache(tmp_path)
    third.encode_rows(changed, renderer, "chat")
    assert (third.stats.outcome, third.stats.hits, third.stats.misses) == ("partial", 6, 1)
    assert TokenCache(tmp_path).shelf_path(ChatRenderer(smollm2_tokenizer, 25), "chat", "a") != cache.shelf_path(
        renderer, "chat", "a") != cache.shelf_path(renderer, "chat", "b")


def test_validation_file_holding_a_training_row_fails(make_cfg, tmp_path):
    train = [chat_row(i, reply_words=20) for i in range(12)]
    data = write_rows(tmp_path / "train.jsonl", train)
    val = write_rows(tmp_path / "val.jsonl", [chat_row(100, 20), {**train[5], "id": "copied"}])
    cfg = make_cfg(*TINY, "data=file", f"data.path={data}", f"data.val_path={val}", "data.cache_dir=null")
    cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(ContaminationError, match=rf"val: 1 of 2 rows equal a training row \(id copied \({val}:2\) = "
                                                 rf"train id r5 \({data}:6\)\)") as err:
        run(cfg)
    assert "data.contamination=warn" in str(err.value)
    assert not (tmp_path / "run").exists()  # nothing written
    cfg.data.contamination = "warn"  # downgraded: the run goes on, and the data card has the figures
    run(cfg)
    card = json.loads((tmp_path / "run" / "data_card.json").read_text())
    assert card["contamination"]["splits"]["val"]["exact_matches"] == 1 and card["contamination"]["failed"]


def test_too_many_dropped_rows_stop_the_run_with_the_counts(make_cfg, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "word " * 100}, {"role": "assistant", "content": "short"}]}
            for _ in range(3)] + [chat_row(i) for i in range(9)]
    data = write_rows(tmp_path / "rows.jsonl", [{**r, "messages": [{**r["messages"][0], "content": r["messages"][0][
        "content"] + str(i)}, r["messages"][1]]} for i, r in enumerate(rows)])
    cfg = make_cfg(*TINY, "data=file", f"data.path={data}", "data.max_length=80", "data.val_fraction=0",
                   "data.cache_dir=null")
    with pytest.raises(ValueError, match=r"25.0% of the train rows dropped, more than data.max_dropped_fraction=0.1 "
                                         r"\(3 every supervised token truncated away"):
        run(cfg)
    cfg.data.max_dropped_fraction = 0.3
    assert run(cfg)["card"]["dropped"]["train"] == {"every supervised token truncated away (data.max_length=80)": 3}


def test_mixture_draws_by_weight(make_cfg, tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [chat_row(i) for i in range(20)])
    b = write_rows(tmp_path / "b.jsonl", [chat_row(100 + i) for i in range(40)])
    cfg = make_cfg(*TINY, "data=mixture", f"data.mixture=[{{path: {a}, weight: 1}}, {{path: {b}, weight: 3}}]",
                   "data.val_fraction=0.1", "data.mixture_size=80", "data.cache_dir=null")
    cfg.paths.output_dir = str(tmp_path / "run")
    run(cfg)
    card = json.loads((tmp_path / "run" / "data_card.json").read_text())
    # 18 and 36 training rows after each source's 10% validation split; shares 1/4 and 3/4 of 80
    assert [(m["available"], m["drawn"], m["repeated"]) for m in card["mixture"].values()] == [(18, 20, 2), (36, 60, 24)]
    assert card["examples"] == {"train": 80, "val": 6}  # the repeats stay: dedup runs before the draw
    assert [s["read"] for s in card["sources"]] == [20, 40]


def test_a_damaged_cache_file_is_a_miss(smollm2_tokenizer, tmp_path):
    from llmft.data.cache import TokenCache
    from llmft.data.templates import ChatRenderer

    renderer, rows = ChatRenderer(smollm2_tokenizer, 64), [chat_row(i) for i in range(3)]
    path = TokenCache(tmp_path).shelf_path(renderer, "chat", "rows without a source")
    path.write_bytes(b"PK\x03\x04 not a whole zip file")
    cache = TokenCache(tmp_path)
    assert len(cache.encode_rows(rows, renderer, "chat")[0]) == 3
    assert (cache.stats.outcome, cache.stats.misses) == ("miss", 3)
    assert TokenCache(tmp_path).encode_rows(rows, renderer, "chat")[0] == cache.encode_rows(rows, renderer, "chat")[0]
