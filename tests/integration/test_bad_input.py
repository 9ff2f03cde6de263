"""Bad input fails early with a message that says what and where, and leaves nothing half-written."""
from __future__ import annotations

import subprocess
import sys

import pytest

from llmft.data.formats import DataFormatError
from llmft.train import run
from tests.conftest import ROOT


def written(folder) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_missing_model_path(make_cfg, tmp_path):
    missing = tmp_path / "no-such-model"
    cfg = make_cfg(f"model.name_or_path={missing}", "evaluate=false")
    with pytest.raises(FileNotFoundError, match=f"model.name_or_path='{missing}': no such folder"):
        run(cfg)
    assert written(tmp_path) == set()  # no checkpoints, metrics or run card


def test_malformed_json_line_names_file_and_line(make_cfg, tmp_path):
    data = tmp_path / "rows.jsonl"
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}'
    data.write_text(f"{good}\n{good}\n{{\"messages\": [\n{good}\n")
    out = tmp_path / "run"
    cfg = make_cfg("model=tiny", "data=file", f"data.path={data}", "data.format=chat")
    cfg.paths.output_dir = str(out)
    with pytest.raises(DataFormatError, match=rf"{data}:3: malformed JSON"):
        run(cfg)
    assert written(out) == set()


def test_bad_row_names_field(make_cfg, tmp_path):
    data = tmp_path / "alpaca.jsonl"
    data.write_text('{"instruction": "Say hi", "output": "hi"}\n{"instruction": "Say bye"}\n')
    cfg = make_cfg("model=tiny", "data=file", f"data.path={data}", "data.format=alpaca")
    with pytest.raises(DataFormatError, match=rf"{data}:2: missing field 'output'"):
        run(cfg)


def test_unknown_config_option_lists_the_choices(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", "peft=nope", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "Could not find 'peft/nope'" in proc.stderr
    assert "full" in proc.stderr and "lora" in proc.stderr and "qlora" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_incompatible_options_name_both(make_cfg):
    cfg = make_cfg("model=tiny", "peft=qlora", "precision=fp16_mixed", "evaluate=false")
    with pytest.raises(ValueError, match=r"peft=qlora .* precision 16-mixed"):
        run(cfg)
