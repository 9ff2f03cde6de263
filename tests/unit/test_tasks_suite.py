"""The bundled task suite: public surface, determinism, bundled files, split hygiene."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmft.data import tasks
from llmft.data.tasks import (
    SPLITS,
    TASK_NAMES,
    VIEWS,
    bundled_path,
    dedup_key,
    load_bundled,
    prompt_key,
    splits,
    verify,
)
from llmft.utils import write_bytes_atomic

SRC = Path(tasks.__file__).resolve().parents[3]


# --- the public surface ---------------------------------------------------------------------


def test_public_names():
    assert TASK_NAMES == ("tool_call", "arithmetic", "word_list", "multi_turn", "policy")
    assert VIEWS == ("chat", "preference", "unpaired", "prompt")
    assert SPLITS == ("train", "val", "test")
    assert tasks.BUNDLED_DIR == SRC / "llmft" / "data" / "bundled"
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


def test_python_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "llmft.data.tasks", "--check"],
                          env={"PYTHONPATH": str(SRC)}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: 12 files" in proc.stdout and not proc.stderr


def test_write_all_gives_the_ordinary_file_mode(tmp_path):
    old = os.umask(0o027)
    try:
        tasks.write_all(tmp_path)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert len(modes) == 12 and set(modes.values()) == {0o640}  # 0666 less the umask


def test_failed_atomic_write_keeps_the_target_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "chat_train.jsonl"
    target.write_bytes(b"old\n")
    with pytest.raises(TypeError):
        write_bytes_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["chat_train.jsonl"]


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
    assert "dedup_key" in splits.__doc__
    keys = [dedup_key(r) for s in SPLITS for r in chat[s]]
    assert len(set(keys)) == len(keys)


def test_prompt_key_ignores_the_final_answer_and_matches_prompt_view(chat, all_views):
    row = chat["test"][0]
    other = json.loads(json.dumps(row))
    other["messages"][-1]["content"] = "something else"
    assert prompt_key(other) == prompt_key(row)
    assert prompt_key(all_views["test"]["prompt"][0]) == prompt_key(row)

