"""Sources through `datasets`: the public layouts on their fixtures, renames, selection, offline Hub names."""
from __future__ import annotations

import json
import shutil
import socket
import time

import datasets
import pytest

from llmft import network
from llmft.data import formats, layouts
from llmft.data.formats import DataFormatError
from llmft.data.sources import HubUnavailableError, SourceSpec, load_source
from llmft.data.tasks import TASK_NAMES, verify
from llmft.rewards.verifier import TaskVerifier
from tests.conftest import ROOT

HUB = ROOT / "tests" / "fixtures" / "hub"


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory, monkeypatch):
    """`datasets` builds its Arrow cache here, not in the user's cache (one per test session)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf_datasets"))


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def fixture(layout: str, split: str = "train", **kwargs) -> SourceSpec:
    return SourceSpec(path=str(HUB / layout), format=layouts.LAYOUTS[layout].format, layout=layout, split=split,
                      **kwargs)


# The second row (record 2) of each fixture's training split, as its layout adapter must yield it.
EXPECTED = {
    ("alpaca", "train", None): {
        "instruction": "Translate the sentence into French.", "input": "The library opens at nine.",
        "output": "La bibliothèque ouvre à neuf heures."},
    ("ultrachat", "train_sft", None): {
        "messages": [user("What are the main differences between a virus and a bacterium?"),
                     assistant("Bacteria are living single cells that can reproduce on their own; viruses are much "
                               "smaller and can only replicate inside a host cell. Antibiotics work against bacteria "
                               "but not against viruses.")],
        "id": "d01132cbbb59ad8aa57e7227d10c74b4930c8411674a1666e6ef78625c16da88"},
    ("ultrafeedback", "train_prefs", None): {
        "prompt": [user("Suggest a title for a blog post about saving money on groceries.")],
        "chosen": [assistant('"Full Cart, Fat Wallet: 10 Ways to Spend Less at the Supermarket"')],
        "rejected": [assistant("Groceries.")],
        "id": "e4a6f5534fcc6be0ec5c4802d5a2d17501c9174467818b070db8bb91fa2eea8a"},
    ("hh_rlhf", "train", None): {  # a multi-turn dialogue: the prompt holds the earlier turns
        "prompt": [user("How do I get a stain out of a white shirt?"),
                   assistant("What kind of stain is it, and has it been washed yet?"),
                   user("It's a coffee stain, not washed yet.")],
        "chosen": [assistant("Rinse it from the back with cold water, rub in a little liquid detergent, leave it ten "
                             "minutes, then wash as usual.")],
        "rejected": [assistant("Throw it away and buy a new one.")]},
    ("kto_mix", "train", None): {
        "prompt": [user("What is the chemical symbol for gold?")],
        "completion": [assistant("The chemical symbol for gold is Go.")], "label": False},
    ("gsm8k", "train", "main"): {
        "prompt": "Tom reads 12 pages a day. How many pages does he read in 2 weeks?",
        "completion": "Two weeks have 2 * 7 = <<2*7=14>>14 days.\nTom reads 12 * 14 = <<12*14=168>>168 pages.\n#### 168",
        "answer": "168", "task": "gsm8k"},
}
TRAIN_ROWS = {"alpaca": 10, "ultrachat": 8, "ultrafeedback": 8, "hh_rlhf": 8, "kto_mix": 9, "gsm8k": 8}


@pytest.mark.parametrize(("layout", "split", "name"), list(EXPECTED))
def test_each_layout_adapts_its_public_rows(layout, split, name):
    loaded = load_source(fixture(layout, split, name=name))
    origin = f"{HUB / layout}{f':{name}' if name else ''}/{split}"
    assert loaded.origin == origin and loaded.read == len(loaded.rows) == TRAIN_ROWS[layout]
    assert loaded.rows[1] == {**EXPECTED[(layout, split, name)], "_line": 2, "_source": origin}
    assert [r["_line"] for r in loaded.rows] == list(range(1, TRAIN_ROWS[layout] + 1))
    data_dir = "main" if layout == "gsm8k" else "data"
    assert loaded.files == [HUB / layout / data_dir / f"{split}.jsonl"]
    assert loaded.fingerprint and loaded.fingerprint == load_source(fixture(layout, split, name=name)).fingerprint
    # the rows are valid rows of the layout's format: every view the format feeds converts them
    for view, formats_fed in formats.CONVERSIONS.items():
        if layouts.LAYOUTS[layout].format in formats_fed:
            formats.convert(loaded.rows, layouts.LAYOUTS[layout].format, view, origin)


def test_the_val_split_of_a_fixture_and_the_config_name():
    test = load_source(fixture("gsm8k", "test", name="main"))
    assert test.read == 3 and test.rows[2]["answer"] == "60" and test.origin.endswith("gsm8k:main/test")
    with pytest.raises(ValueError, match=r"data.split=validation: .*Unknown split"):
        load_source(fixture("ultrafeedback", "validation"))


def test_columns_are_renamed_before_the_rows_are_read(tmp_path):
    # gsm8k's columns as a plain completion source: question -> prompt, answer -> completion
    spec = SourceSpec(path=str(HUB / "gsm8k"), name="main", format="completion",
                      columns={"question": "prompt", "answer": "completion"})
    row = load_source(spec).rows[0]
    assert set(row) == {"prompt", "completion", "_line", "_source"} and row["completion"].endswith("#### 9")
    # the same in a local JSONL file (formats.read_rows: exact line numbers)
    path = tmp_path / "qa.jsonl"
    path.write_text('{"q": "Hi?", "a": "Hello."}\n\n{"q": "Bye?", "a": "Goodbye."}\n')
    rows = load_source(SourceSpec(path=str(path), format="completion", columns={"q": "prompt", "a": "completion"})).rows
    assert rows == [{"prompt": "Hi?", "completion": "Hello.", "_line": 1, "_source": str(path)},
                    {"prompt": "Bye?", "completion": "Goodbye.", "_line": 3, "_source": str(path)}]


def test_a_missing_column_is_named_with_the_columns_there_are(tmp_path):
    spec = SourceSpec(path=str(HUB / "gsm8k"), name="main", format="completion", columns={"problem": "prompt"})
    with pytest.raises(DataFormatError, match=r"gsm8k:main/train: data.columns renames column 'problem', which the "
                                              r"source does not have; its columns: 'question', 'answer'"):
        load_source(spec)
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "Hi?", "a": "Hello."}\n')
    with pytest.raises(DataFormatError, match=rf"{path}: data.columns renames column 'question'.*'a', 'q'"):
        load_source(SourceSpec(path=str(path), format="completion", columns={"question": "prompt"}))
    with pytest.raises(DataFormatError, match="renames 'q' to 'a', but the source already has a column 'a'"):
        load_source(SourceSpec(path=str(path), format="completion", columns={"q": "a"}))


def test_a_layout_names_the_columns_it_lacks():
    with pytest.raises(DataFormatError, match=r"ultrachat/train_sft: data.layout=alpaca needs column\(s\) "
                                              r"'instruction', 'output'; the source has 'prompt', 'prompt_id', 'messages'"):
        load_source(SourceSpec(path=str(HUB / "ultrachat"), format="alpaca", layout="alpaca", split="train_sft"))


def test_limit_and_shuffle_are_deterministic():
    first = load_source(fixture("alpaca", limit_rows=3)).rows
    assert [r["_line"] for r in first] == [1, 2, 3]
    shuffled = [r["_line"] for r in load_source(fixture("alpaca", shuffle_seed=7)).rows]
    assert sorted(shuffled) == list(range(1, 11)) and shuffled != list(range(1, 11))
    assert [r["_line"] for r in load_source(fixture("alpaca", shuffle_seed=7)).rows] == shuffled
    assert [r["_line"] for r in load_source(fixture("alpaca", shuffle_seed=8)).rows] != shuffled
    limited = load_source(fixture("alpaca", shuffle_seed=7, limit_rows=4))
    assert [r["_line"] for r in limited.rows] == shuffled[:4] and limited.read == 4


def test_spec_checks():
    with pytest.raises(ValueError, match="data.layout=ultrafeedback yields preference rows, but data.format=chat: "
                                         "set data.format=preference"):
        SourceSpec(path="x", layout="ultrafeedback")
    with pytest.raises(ValueError, match="data.layout='sharegpt': choose one of alpaca, ultrachat"):
        SourceSpec(path="x", format="chat", layout="sharegpt")
    with pytest.raises(ValueError, match=r"unknown key\(s\) splt, wieght; an entry takes path, format"):
        SourceSpec.from_dict({"path": "x", "splt": "test", "wieght": 2})
    entry = SourceSpec.from_dict({"path": "HuggingFaceH4/ultrachat_200k", "layout": "ultrachat", "split": "train_sft"})
    assert (entry.format, entry.weight) == ("chat", 1.0)


def test_a_hub_name_offline_and_not_cached_fails_at_once_saying_what_to_do():
    started = time.perf_counter()
    with pytest.raises(HubUnavailableError) as err:  # tests run with HF_HUB_OFFLINE=1 (tests/conftest.py)
        load_source(SourceSpec(path="HuggingFaceH4/ultrafeedback_binarized", format="preference",
                               layout="ultrafeedback", split="train_prefs"))
    assert time.perf_counter() - started < 3
    message = str(err.value)
    assert message.startswith("data.path=HuggingFaceH4/ultrafeedback_binarized: not a local file or folder, "
                              "the Hub is off (HF_HUB_OFFLINE is set)")
    assert "not in the local datasets cache" in message and "point data.path at a local copy" in message


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_hub_is_decided_by_a_probe(monkeypatch):
    port = closed_port()
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.perf_counter()
    with pytest.raises(HubUnavailableError, match=rf"data.path=openai/gsm8k: not a local file or folder, "
                                                  rf"127.0.0.1:{port} is unreachable \(ConnectionRefusedError.*"
                                                  r"run once with network access"):
        load_source(SourceSpec(path="openai/gsm8k", name="main", format="completion", layout="gsm8k"))
    assert time.perf_counter() - started < 3
    assert datasets.config.HF_HUB_OFFLINE is False  # the offline switch was put back


def test_a_host_that_never_answers_is_given_up_on_after_the_probe_timeout(monkeypatch):
    """A connect that hangs (a black-holed route, a DNS lookup that never returns) costs the probe's bound."""
    monkeypatch.setattr(network.socket, "create_connection", lambda *a, **k: time.sleep(10))
    started = time.perf_counter()
    assert network.unreachable("https://huggingface.co", 0.3) == "huggingface.co:443 is unreachable (no answer within 0.3 s)"
    assert time.perf_counter() - started < 1


def test_a_cached_hub_dataset_loads_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    shutil.copytree(HUB / "gsm8k", tmp_path / "gsm8k")
    load_source(SourceSpec(path="gsm8k", name="main", format="completion", layout="gsm8k"))  # a folder: cached
    shutil.rmtree(tmp_path / "gsm8k")  # now "gsm8k" can only be a Hub name, and the Hub is off
    loaded = load_source(SourceSpec(path="gsm8k", name="main", split="test", format="completion", layout="gsm8k"))
    assert loaded.origin == "gsm8k:main/test" and loaded.read == 3 and loaded.files == []
    assert loaded.rows[0]["answer"] == "168"


def test_a_path_that_is_neither_file_nor_hub_name(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.path=.*missing.jsonl: no such file or folder"):
        load_source(SourceSpec(path=str(tmp_path / "missing.jsonl")))


# --- the adapters' errors name source, line and field ---------------------------------------------


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_preference_layouts_need_a_shared_prompt(tmp_path):
    rows = [{"chosen": [user("Q"), assistant("A")], "rejected": [user("Q"), assistant("B")]},
            {"chosen": [user("Q"), assistant("A")], "rejected": [user("other"), assistant("B")]}]
    path = write_jsonl(tmp_path / "uf.jsonl", rows)
    with pytest.raises(DataFormatError, match=rf"{path}:2: fields 'chosen' and 'rejected' do not share the prompt: "
                                              r"they differ at message 0"):
        load_source(SourceSpec(path=str(path), format="preference", layout="ultrafeedback"))
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello",
                                                 "rejected": "\n\nHuman: Hi\n\nAssistant: Go away"},
                                                {"chosen": "Hi there", "rejected": "\n\nHuman: Hi\n\nAssistant: x"}])
    with pytest.raises(DataFormatError, match=rf"{path}:2: field 'chosen' must start with '\\n\\nHuman:'"):
        load_source(SourceSpec(path=str(path), format="preference", layout="hh_rlhf"))
    path = write_jsonl(tmp_path / "hh2.jsonl", [{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Thanks",
                                                  "rejected": "\n\nHuman: Hi\n\nAssistant: Go away"}])
    with pytest.raises(DataFormatError, match=rf"{path}:1: field 'chosen' ends with a user message: no assistant answer"):
        load_source(SourceSpec(path=str(path), format="preference", layout="hh_rlhf"))


def test_layout_rows_missing_a_field_or_a_final_answer(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "1+1?", "answer": "1+1=2\n#### 2"}, {"question": "2+2?"}])
    with pytest.raises(DataFormatError, match=rf"{path}:2: missing field 'answer' \(data.layout=gsm8k needs question, "
                                              r"answer\)"):
        load_source(SourceSpec(path=str(path), format="completion", layout="gsm8k"))
    path = write_jsonl(tmp_path / "g2.jsonl", [{"question": "1+1?", "answer": "It is 2."}])
    with pytest.raises(DataFormatError, match=rf"{path}:1: field 'answer' does not end with the final '#### <number>'"):
        load_source(SourceSpec(path=str(path), format="completion", layout="gsm8k"))
    path = write_jsonl(tmp_path / "u.jsonl", [{"messages": "Hello"}])
    with pytest.raises(DataFormatError, match=rf"{path}:1: field 'messages' must be a list of messages"):
        load_source(SourceSpec(path=str(path), format="chat", layout="ultrachat"))


# --- gsm8k's verifier ------------------------------------------------------------------------------


@pytest.mark.parametrize(("response", "correct"), [
    ("12 * 14 = 168 pages.\n#### 168", True),
    ("He reads 168 pages in two weeks.", True),  # no ####: the last number
    ("In 14 days he reads 168.0 pages", True),  # numerically equal
    ("#### 168 pages, not 12", True),  # the number after ####, not the last one
    ("168 pages? No: 12 * 7 = 84", False),  # the last number decides
    ("#### 186", False),
    ("I do not know.", False),
])
def test_gsm8k_verifier_compares_the_final_number(response, correct):
    assert verify("gsm8k", response, "168") is correct


def test_gsm8k_verifier_reads_thousands_and_currency():
    assert verify("gsm8k", "The total is $1,200.", "1200") and verify("gsm8k", "#### -3", "-3")
    assert not verify("gsm8k", "#### 1,2", "12")


def test_the_verifier_reward_accepts_gsm8k_rows_but_the_suite_does_not_list_it():
    rows, _ = formats.convert(load_source(fixture("gsm8k", name="main")).rows, "completion", "prompt", "gsm8k")
    assert rows[0]["prompt"] == [user("A baker makes 36 muffins and sells 3/4 of them in the morning. "
                                      "How many muffins are left?")]
    assert (rows[0]["answer"], rows[0]["task"]) == ("9", "gsm8k")
    TaskVerifier().check_rows(rows, "gsm8k (training)")
    assert TaskVerifier()(["So 9 are left.\n#### 9", "#### 8"], [rows[0], rows[0]]) == [1.0, 0.0]
    assert "gsm8k" not in TASK_NAMES
