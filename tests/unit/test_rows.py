"""load_rows on files: a source's own duplicates, validation splits, the contamination verdict."""
from __future__ import annotations

import json

import pytest

from llmft.data.checks import check_contamination
from llmft.data.rows import DataSpec, load_rows


def chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Tell me fact number {i} about rivers and mountains."},
                         {"role": "assistant", "content": f"Fact {i}: the river {i} flows past mountain {i * 3}."}]}


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_source_holding_rows_twice_does_not_fail_its_own_split(tmp_path):
    data = write(tmp_path / "d.jsonl", [chat(i) for i in range(200)] + [chat(i) for i in range(20)])
    spec = DataSpec(source="file", path=data, val_fraction=0.1)
    rows = load_rows(spec, "chat", seed=0)
    assert check_contamination(spec, rows, {})["failed"] is False
    copies = rows.dropped["val"]["copy of a training row (the source holds it twice; split by data.val_fraction)"]
    assert copies > 0  # the split did put copies on both sides (seed 0)
    assert len(rows.train) + len(rows.val) == 200  # every distinct row once, on one side
    assert sum(rows.dropped["train"].values()) + sum(rows.dropped["val"].values()) == 20  # every copy counted once
    assert rows.converted == {"train": 198, "val": 22}


def test_a_validation_file_is_never_cleaned_the_check_decides(tmp_path):
    data = write(tmp_path / "train.jsonl", [chat(i) for i in range(30)])
    val = write(tmp_path / "val.jsonl", [chat(100), chat(7)])
    spec = DataSpec(source="file", path=data, val_path=val)
    rows = load_rows(spec, "chat", seed=0)
    assert len(rows.val) == 2
    with pytest.raises(ValueError, match=rf"val: 1 of 2 rows equal a training row \({val}:2 = train {data}:8\)"):
        check_contamination(spec, rows, {})


def test_val_split_on_a_file_is_an_error(tmp_path):
    data = write(tmp_path / "d.jsonl", [chat(i) for i in range(4)])
    with pytest.raises(ValueError, match=r"data.val_split=test: .*d.jsonl is one file, without splits"):
        load_rows(DataSpec(source="file", path=data, val_split="test"), "chat", seed=0)


def test_an_unknown_val_split_names_data_val_split():
    from tests.unit.test_sources import HUB

    spec = DataSpec(source="hub", path=str(HUB / "ultrafeedback"), format="preference", layout="ultrafeedback",
                    split="train_prefs", val_split="validation")
    with pytest.raises(ValueError, match=r"data.val_split=validation: .*Unknown split"):
        load_rows(spec, "chat", seed=0)


def test_preference_rows_as_unpaired_count_duplicates_of_the_converted_rows(tmp_path):
    pair = {"prompt": "Which is larger, {i} or {j}?", "chosen": "{j}", "rejected": "{i}"}
    pairs = [{k: v.format(i=i, j=i + 1) for k, v in pair.items()} for i in range(100)]
    data = write(tmp_path / "p.jsonl", pairs + pairs[:6])
    rows = load_rows(DataSpec(source="file", path=data, format="preference", val_fraction=0.0), "unpaired", seed=0)
    # 106 pairs -> 212 unpaired rows, 12 of them the 6 repeated pairs' two sides: 12 of 212, not of 106
    assert rows.converted["train"] == 212 and sum(rows.dropped["train"].values()) == 12
