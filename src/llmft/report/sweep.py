"""Reading a Hydra multirun sweep folder (what `train.py -m` left behind) into a table of runs.

A run folder is a sub-folder with `.hydra/config.yaml`. It is finished when it has `run_card.json`
(train.py writes it last); a folder without one is a run that failed or is still going, and is
counted and listed, never dropped.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from llmft.report.runs import Curve, Objective, read_curves, read_objective, read_overrides

__all__ = ["Run", "Sweep", "SweepError", "load_sweep"]


class SweepError(ValueError):
    """A sweep folder that cannot be reported on; the message names the folder and what is missing."""


@dataclass
class Run:
    folder: Path
    overrides: dict[str, tuple[str, object]]  # key -> (value as written, value as Hydra parsed it)
    finished: bool
    objective: Objective | None
    exact_match: dict[str, dict[str, float]]  # {"tuned": {"overall": x, task: x}, "base": {...}}; {} if none
    eval_split: str | None  # the split exact match was measured on (evaluation.split)
    curves: dict[str, Curve]  # "train/loss", "val/loss" from metrics.csv (absent when never logged)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def num(self) -> int:
        """The Hydra job number (the folder's `<num>_` prefix), for a stable order."""
        match = re.match(r"(\d+)_", self.name)
        return int(match.group(1)) if match else 1 << 30

    @property
    def status(self) -> str:
        return "finished" if self.finished else "unfinished"

    @property
    def final_train_loss(self) -> float | None:
        curve = self.curves.get("train/loss")
        return curve.values[-1] if curve and curve.values else None


def read_run(folder: Path) -> Run:
    """One run folder; missing files give empty fields (an unfinished run has most of them missing)."""
    card_path = folder / "run_card.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else None
    curves = read_curves(folder / "metrics.csv")
    eval_path = folder / "eval.json"
    results = json.loads(eval_path.read_text(encoding="utf-8")) if eval_path.is_file() else {}
    exact_match = {model: dict(r["exact_match"]) for model, r in results.items()
                   if isinstance(r, dict) and isinstance(r.get("exact_match"), dict)}
    return Run(folder=folder, overrides=read_overrides(folder / ".hydra" / "overrides.yaml"), finished=card is not None,
               objective=read_objective(card, curves), exact_match=exact_match,
               eval_split=_eval_split(folder), curves=curves)


def _eval_split(folder: Path) -> str | None:
    from omegaconf import OmegaConf

    config = OmegaConf.load(folder / ".hydra" / "config.yaml")
    return OmegaConf.select(config, "evaluation.split", default=None) if config.get("evaluate", True) else None


@dataclass
class Sweep:
    folder: Path
    runs: list[Run]  # ranked: best objective first, then finished runs without one, then unfinished runs
    swept: list[str]  # the override keys whose values differ between runs, in command-line order
    objective_name: str | None
    direction: str  # "minimize" | "maximize"

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    @property
    def unfinished(self) -> list[Run]:
        return [r for r in self.runs if not r.finished]

    @property
    def ranked(self) -> list[Run]:
        """The finished runs with a value of the sweep's objective, best first (a run measured on another
        objective does not compare, and is listed after them)."""
        return [r for r in self.runs if r.finished and self._comparable(r)]

    def _comparable(self, run: Run) -> bool:
        return _has_value(run.objective) and (self.objective_name is None or run.objective.name == self.objective_name)

    @property
    def best(self) -> Run | None:
        return self.ranked[0] if self.ranked else None

    @property
    def objective_names(self) -> list[str]:
        """Every objective name the finished runs report (more than one: their values do not compare)."""
        return sorted({r.objective.name for r in self.finished if r.objective})

    @property
    def eval_split(self) -> str:
        splits = sorted({r.eval_split for r in self.finished if r.eval_split})
        return "/".join(splits) or "test"

    @property
    def tasks(self) -> list[str]:
        """Task names of exact match, "overall" first."""
        names = {t for r in self.runs for em in r.exact_match.values() for t in em}
        return (["overall"] if "overall" in names else []) + sorted(names - {"overall"})

    def value(self, run: Run, key: str) -> object:
        """The value of a swept key in a run, as Hydra parsed it (None: not set in that run)."""
        return run.overrides[key][1] if key in run.overrides else None

    def label(self, run: Run) -> str:
        """A short name for legends: the swept values (`lr=0.001 r=4`), else the folder name."""
        if not self.swept:
            return run.name
        short = [k.rsplit(".", 1)[-1] for k in self.swept]
        keys = short if len(set(short)) == len(short) else self.swept
        return " ".join(f"{k}={run.overrides[s][0] if s in run.overrides else '-'}" for k, s in zip(keys, self.swept))


def _has_value(objective: Objective | None) -> bool:
    return objective is not None and objective.value is not None and not math.isnan(objective.value)


def run_folders(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if (p / ".hydra" / "config.yaml").is_file()), key=lambda p: p.name)


def load_sweep(sweep_dir: str | Path) -> Sweep:
    """Every run of a sweep folder, ranked by the objective (a validation metric, never test)."""
    folder = Path(sweep_dir).expanduser().resolve()  # absolute: its name is the sweep's (W&B group, titles)
    if not folder.is_dir():
        raise SweepError(f"sweep folder {folder}: no such folder")
    paths = run_folders(folder)
    if not paths:
        raise SweepError(f"sweep folder {folder}: no run folders in it (a run folder has .hydra/config.yaml; "
                         "is it the folder of a `python train.py -m ...` sweep?)")
    runs = sorted((read_run(p) for p in paths), key=lambda r: (r.num, r.name))
    objectives = Counter((r.objective.name, r.objective.direction) for r in runs if r.finished and r.objective)
    name, direction = objectives.most_common(1)[0][0] if objectives else (None, "minimize")
    sign = -1.0 if direction == "maximize" else 1.0

    def rank(r: Run) -> tuple:
        if not r.finished:
            return (2, 0.0, r.num)
        if not _has_value(r.objective) or (name is not None and r.objective.name != name):
            return (1, 0.0, r.num)
        return (0, sign * r.objective.value, r.num)

    return Sweep(folder=folder, runs=sorted(runs, key=rank), swept=swept_keys(runs), objective_name=name,
                 direction=direction)


def swept_keys(runs: list[Run]) -> list[str]:
    """The override keys whose value is not the same in every run (a key missing in some runs counts)."""
    order = list(dict.fromkeys(k for r in runs for k in r.overrides))
    return [k for k in order if len({r.overrides[k][0] if k in r.overrides else None for r in runs}) > 1]
