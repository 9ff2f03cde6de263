"""Bad preference and unpaired input: a clear error naming what and where, or a counted drop."""
from __future__ import annotations

import json

import pytest

from llmft.data.formats import DataFormatError
from llmft.train import run

FAST = ("model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=1", "data.batch_size=2")


def pair(i: int, rejected: str | None = "no") -> dict:
    row = {"prompt": f"Say yes {i}.", "chosen": "yes"}
    if rejected is not None:
        row["rejected"] = rejected
    return row


def write(tmp_path, rows: list[dict], name: str = "rows.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def written(folder) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_a_pair_with_chosen_equal_to_rejected_is_dropped_and_counted(make_cfg, tmp_path):
    data = write(tmp_path, [pair(i) for i in range(6)] + [pair(6, rejected="yes")])
    card = run(make_cfg(*FAST, "method=dpo", "data=file", f"data.path={data}", "data.format=preference",
                        "data.val_fraction=0", "data.max_dropped_fraction=0.2"))["card"]
    assert card["dropped"]["train"] == {"chosen equals rejected (nothing to prefer)": 1}
    assert card["examples"]["train"] == 6


def test_a_missing_rejected_names_file_line_and_field(make_cfg, tmp_path):
    data = write(tmp_path, [pair(0), pair(1), pair(2, rejected=None)])
    out = tmp_path / "run"
    cfg = make_cfg(*FAST, "method=dpo", "data=file", f"data.path={data}", "data.format=preference")
    cfg.paths.output_dir = str(out)
    with pytest.raises(DataFormatError, match=rf"{data}:3: missing field 'rejected'"):
        run(cfg)
    assert written(out) == set()


def test_dpo_on_alpaca_rows_names_both(make_cfg, tmp_path):
    data = write(tmp_path, [{"instruction": "Say hi", "output": "hi"}] * 4)
    with pytest.raises(ValueError, match=r"data=file \(format alpaca\) cannot feed method=dpo: .*data.format=preference"):
        run(make_cfg(*FAST, "method=dpo", "data=file", f"data.path={data}", "data.format=alpaca"))


def test_kto_on_one_label_class_says_it_needs_both(make_cfg, tmp_path):
    rows = [{"prompt": f"Say yes {i}.", "completion": "yes", "label": True} for i in range(6)]
    data = write(tmp_path, rows)
    with pytest.raises(ValueError, match="all have label=true: method=kto needs desirable .* and undesirable"):
        run(make_cfg(*FAST, "method=kto", "data=file", f"data.path={data}", "data.format=unpaired"))


def test_kto_with_a_window_of_one_row_says_so(make_cfg, tmp_path):
    with pytest.raises(ValueError, match=r"= 1: method=kto pairs each row's prompt with another row's completion"):
        run(make_cfg(*FAST, "method=kto", "data.batch_size=1", "data.limit_train=8"))


def test_kto_windows_never_hold_a_single_row():
    from llmft.data.collate import LengthGroupedWindows

    windows = LengthGroupedWindows(list(range(9)), window_size=4, seed=0, group_windows=16, min_size=2).windows(0)
    assert sorted(len(w) for w in windows) == [4, 5]  # 9 rows: the lone ninth joins a window of 4
    assert sorted(i for w in windows for i in w) == list(range(9))


@pytest.mark.parametrize("option, message", [("method.beta=0", "method.beta=0: must be positive"),
                                             ("+method.precompute_ref=true", "KTO: got an unexpected keyword")])
def test_bad_method_options_fail_before_the_model_loads(make_cfg, tmp_path, monkeypatch, option, message):
    from llmft import models

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the method's options were checked")

    monkeypatch.setattr(models, "build", no_loading)
    method = "dpo" if "beta" in option else "kto"
    with pytest.raises(ValueError, match=message):
        run(make_cfg(*FAST, f"method={method}", option))
    assert written(tmp_path) == set()
