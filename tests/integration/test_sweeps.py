"""The sweep configs (`sweeps/sweep/*.yaml`, `python train.py -m +sweep=<name>`): found through the search
path from any working directory, their grids and search spaces as Hydra's sweepers expand them, the
multirun settings every sweep gets; and an Optuna sweep run end to end (tiny model)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from tests.conftest import CONF, ROOT

SWEEPS = ROOT / "sweeps" / "sweep"
# a run short enough for a sweep of the machinery: tiny model, 3 steps, 2 validation batches, 1 prompt a
# task with 2 new tokens
SHORT = ["model=tiny", "precision=fp32", "trainer.max_steps=3", "++trainer.limit_val_batches=2",
         "data.limit_train=16", "data.batch_size=4", "evaluation.limit=1", "evaluation.max_new_tokens=2"]


def compose_sweep(name: str | None, *overrides: str) -> DictConfig:
    """What `python train.py -m [+sweep=name] overrides` composes, the hydra node included."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        extra = [f"+sweep={name}"] if name else []
        return compose("train", overrides=[*extra, *overrides], return_hydra_config=True)


def grid(cfg: DictConfig, *command_line: str) -> list[dict[str, str]]:
    """The jobs Hydra's basic sweeper launches: the config's `hydra.sweeper.params`, then the command
    line's sweeps (Hydra's own expansion, `BasicSweeper.split_arguments`)."""
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()] + list(command_line)
    [batch] = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    return [dict(override.split("=", 1) for override in job) for job in batch]


def run_folder_name(name: str, job: dict[str, str], num: int) -> str:
    """`hydra.sweep.subdir` of one job, resolved as Hydra resolves it inside that job."""
    cfg = compose_sweep(name, *(f"{k}={v}" for k, v in job.items()))
    setup_globals()
    with open_dict(cfg):
        cfg.hydra.job.num = num
    HydraConfig.instance().set_config(cfg)
    return str(cfg.hydra.sweep.subdir)


def test_the_sweeps_are_global_configs_of_the_sweep_group():
    assert sorted(p.stem for p in SWEEPS.glob("*.yaml")) == ["dpo_beta", "lr_rank", "optuna"]
    for path in SWEEPS.glob("*.yaml"):
        assert path.read_text().startswith("# @package _global_\n"), path


def test_lr_rank_is_a_2x2_lora_grid_that_the_command_line_widens():
    cfg = compose_sweep("lr_rank")
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    assert cfg.peft._target_ == "llmft.models.LoraSpec"
    jobs = grid(cfg)
    assert [(float(j["optim.lr"]), int(j["peft.r"])) for j in jobs] == [(3e-4, 8), (3e-4, 16), (1e-3, 8), (1e-3, 16)]
    # README: a sweep of the same key on the command line replaces the config's axis
    wider = grid(cfg, "optim.lr=1e-4,3e-4,1e-3,3e-3", "peft.r=range(4,33,4)")
    assert len(wider) == 4 * 8
    assert sorted({float(j["optim.lr"]) for j in wider}) == [1e-4, 3e-4, 1e-3, 3e-3]
    # every point runs in its own readable folder of the one sweep folder
    names = [run_folder_name("lr_rank", job, num) for num, job in enumerate(jobs)]
    assert names == ["0_sft-lora_lr0.0003_r8", "1_sft-lora_lr0.0003_r16", "2_sft-lora_lr0.001_r8",
                     "3_sft-lora_lr0.001_r16"]
    assert str(cfg.hydra.sweep.dir).startswith(f"{cfg.paths.runs_dir}/multirun/")
    assert str(cfg.hydra.sweep.dir).endswith("_lr_rank")


def test_dpo_beta_is_a_dpo_grid_on_validation_exact_match():
    from llmft.objective import DIRECTIONS

    cfg = compose_sweep("dpo_beta")
    assert cfg.method._target_ == "llmft.methods.preference.DPO"
    assert cfg.method.precompute_ref is True  # the reference depends on neither lr nor beta: computed once
    # val/loss changes scale with beta: the points are compared on a metric beta does not rescale
    assert cfg.objective == "val/exact_match" and cfg.objective in DIRECTIONS and cfg.evaluate
    assert cfg.init_from is None
    assert compose_sweep("dpo_beta", "init_from=/runs/sft").init_from == "/runs/sft"
    jobs = grid(cfg)
    assert [(float(j["optim.lr"]), float(j["method.beta"])) for j in jobs] == [
        (5e-5, 0.1), (5e-5, 0.5), (1e-4, 0.1), (1e-4, 0.5)]
    assert run_folder_name("dpo_beta", jobs[3], 3) == "3_dpo-lora_lr0.0001_beta0.5"
    assert str(cfg.hydra.sweep.dir).endswith("_dpo_beta")


@pytest.mark.filterwarnings("ignore:Deprecated API features detected")  # optuna 2.10 on SQLAlchemy 1.4, on import
def test_optuna_is_a_seeded_tpe_search_in_the_objectives_direction():
    from hydra_plugins.hydra_optuna_sweeper._impl import (create_optuna_distribution_from_override,
                                                          create_params_from_overrides)
    from optuna.distributions import CategoricalDistribution, LogUniformDistribution

    from llmft.objective import DIRECTIONS

    cfg = compose_sweep("optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and isinstance(sweeper.sampler.seed, int)
    assert 1 <= sweeper.n_trials <= 4 and sweeper.sampler.n_startup_trials < sweeper.n_trials
    assert sweeper.direction == DIRECTIONS[cfg.objective] == "minimize"
    parser = OverridesParser.create()
    space = {key: create_optuna_distribution_from_override(parser.parse_override(f"{key}={value}"))
             for key, value in sweeper.params.items()}
    assert space == {"optim.lr": LogUniformDistribution(1e-4, 1e-2),
                     "peft.r": CategoricalDistribution([4, 8, 16, 32])}
    # README: a dimension on the command line replaces the config's (the sweeper's own merge)
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in sweeper.params.items()]
                                                + ["peft.r=choice(8,16)", "seed=7"])
    assert space["peft.r"] == CategoricalDistribution([8, 16]) and fixed == {"seed": "7"}
    assert run_folder_name("optuna", {"optim.lr": "0.002", "peft.r": "4"}, 1) == "1_sft-lora_lr0.002_r4"


def test_every_multirun_gets_the_sweep_summary_and_the_slurm_launcher_is_documented():
    cfg = compose_sweep(None)
    assert cfg.hydra.callbacks.sweep_summary._target_ == "llmft.report.SweepSummary"
    slurm = compose_sweep("lr_rank", "hydra/launcher=slurm").hydra.launcher
    assert slurm._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert slurm.partition == "debug" and slurm.max_num_timeout >= 1  # a short job's signal counts as a time-out
    assert OmegaConf.to_container(slurm)["submitit_folder"].startswith("${hydra.sweep.dir}/")
    assert not any("${" in line for line in slurm.setup)  # the launcher resolves these lines twice
    lines = (CONF / "hydra" / "launcher" / "slurm.yaml").read_text().splitlines()
    for option in ("submitit_folder", "partition", "timeout_min", "cpus_per_task", "gpus_per_node", "nodes",
                   "tasks_per_node", "mem_gb", "array_parallelism", "signal_delay_s", "max_num_timeout", "setup",
                   "additional_parameters"):
        [at] = [i for i, line in enumerate(lines) if line.startswith(f"{option}:")]
        assert "#" in lines[at] or lines[at - 1].startswith("#"), f"{option} has no comment"


def python(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_the_sweeps_are_found_from_any_working_directory(tmp_path):
    proc = python(str(ROOT / "train.py"), "--info", "searchpath", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"file://{ROOT / 'sweeps'}" in proc.stdout
    proc = python(str(ROOT / "train.py"), "+sweep=optuna", "--cfg", "hydra", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OptunaSweeper" in proc.stdout
    # the plugin leaves other Hydra applications alone
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("a: 1\n")
    (tmp_path / "app.py").write_text(
        "import hydra\n@hydra.main(version_base='1.3', config_path='conf', config_name='config')\n"
        "def main(cfg):\n    pass\nmain()\n")
    proc = python("app.py", "--info", "searchpath", cwd=tmp_path)
    assert proc.returncode == 0 and "llmft-sweeps" not in proc.stdout, proc.stdout + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory) -> Path:
    """`python train.py -m +sweep=optuna` with 2 trials, launched from outside the checkout."""
    sweep_dir = tmp_path_factory.mktemp("optuna") / "sweep"
    proc = python(str(ROOT / "train.py"), "-m", "+sweep=optuna", "hydra.sweeper.n_trials=2", *SHORT,
                  f"hydra.sweep.dir={sweep_dir}", cwd=sweep_dir.parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return sweep_dir


def trial_cards(sweep_dir: Path) -> dict[str, dict]:
    return {card.parent.name: json.loads(card.read_text()) for card in sorted(sweep_dir.glob("*/run_card.json"))}


def test_optuna_reports_the_best_trial_by_the_runs_objective(optuna_sweep):
    cards = trial_cards(optuna_sweep)
    assert len(cards) == 2, sorted(p.name for p in optuna_sweep.iterdir())
    objectives = {name: card["objective"] for name, card in cards.items()}
    for objective in objectives.values():
        assert objective["name"] == "val/loss" and objective["direction"] == "minimize"
        assert isinstance(objective["value"], float), objective
    best_run = min(objectives, key=lambda name: objectives[name]["value"])
    results = yaml.safe_load((optuna_sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert results["best_value"] == pytest.approx(objectives[best_run]["value"], rel=1e-12)
    config = yaml.safe_load((optuna_sweep / best_run / ".hydra" / "config.yaml").read_text())
    assert results["best_params"]["peft.r"] == config["peft"]["r"]
    assert results["best_params"]["optim.lr"] == pytest.approx(config["optim"]["lr"])
    # the trials sampled different points, each run folder named after its own
    assert len({(c["optim"]["lr"], c["peft"]["r"]) for c in
                (yaml.safe_load((optuna_sweep / n / ".hydra" / "config.yaml").read_text()) for n in cards)}) == 2
    for name in cards:
        assert name.split("_", 1)[1].startswith("sft-lora_lr")


def test_the_sweep_summary_is_written_at_the_end(optuna_sweep):
    with open(optuna_sweep / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["run"] for row in rows) == sorted(trial_cards(optuna_sweep))
    # it ranks on the same objective Optuna minimised: its first row is Optuna's best trial
    best = yaml.safe_load((optuna_sweep / "optimization_results.yaml").read_text())["best_value"]
    [first] = [row for row in rows if row["rank"] == "1"]
    assert float(first["objective"]) == pytest.approx(best, rel=1e-9)
    assert first["run"] in (optuna_sweep / "summary.md").read_text()
