"""Reading finished run folders: a relative `init_from` is relative to where its run was launched."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from llmft.runs import finished_run, lineage


def fake_run(folder: Path, init_from: str | None, launched_from: Path) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / "checkpoints" / "adapter").mkdir(parents=True)
    (folder / "run_card.json").write_text("{}")
    OmegaConf.save(OmegaConf.create({"init_from": init_from}), folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"cwd": str(launched_from)}}}),
                   folder / ".hydra" / "hydra.yaml")
    return folder


def test_relative_init_from_resolves_against_the_launch_folder(tmp_path, monkeypatch):
    project = tmp_path / "project"
    sft = fake_run(project / "runs" / "sft", None, project)
    dpo = fake_run(project / "runs" / "dpo", "runs/sft", project)  # as typed in `project`
    monkeypatch.chdir(tmp_path)  # read from elsewhere: runs/sft does not exist here
    assert lineage(finished_run(dpo)) == [sft / "checkpoints" / "adapter", dpo / "checkpoints" / "adapter"]


def test_a_missing_parent_names_the_option(tmp_path, monkeypatch):
    run = fake_run(tmp_path / "dpo", "runs/gone", tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="init_from=.*runs/gone: no such folder"):
        lineage(finished_run(run))
