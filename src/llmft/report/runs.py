"""Reading the files of one run folder: its command-line overrides, its curves, its objective."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

CURVES = ("train/loss", "val/loss")


@dataclass
class Objective:
    """The validation metric a sweep selects on (never a test metric)."""

    name: str  # "val/loss", "val/exact_match", "val/reward", ...
    value: float | None
    direction: str  # "minimize" | "maximize"
    source: str  # "run_card" (its "objective" entry) or "metrics.csv" (the last val/loss logged)


@dataclass
class Curve:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def read_overrides(path: Path) -> dict[str, tuple[str, object]]:
    """`.hydra/overrides.yaml` as {key: (value as written, value as Hydra parses it)}: `peft=qlora`,
    `optim.lr=0.001`, `+x=1` (key `x`), `~x` (value `~`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    if not path.is_file():
        return {}
    lines = [str(line) for line in OmegaConf.to_container(OmegaConf.load(path)) or []]
    parsed = {}
    for override in OverridesParser.create().parse_overrides(lines):
        if override.is_delete():
            parsed[override.key_or_group] = ("~", None)
        else:
            value = override.value()
            parsed[override.key_or_group] = (override.get_value_element_as_str(),
                                             value if isinstance(value, (int, float, str, bool)) else str(value))
    return parsed


def read_curves(path: Path) -> dict[str, Curve]:
    """The logged points of `train/loss` and `val/loss` in a Lightning `metrics.csv` (a row per
    logging call, blank cells for the columns it did not log)."""
    curves: dict[str, Curve] = {}
    if not path.is_file():
        return curves
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for name in CURVES:
                cell = (row.get(name) or "").strip()
                if cell:
                    curve = curves.setdefault(name, Curve())
                    curve.steps.append(int(float(row.get("step") or len(curve.steps))))
                    curve.values.append(float(cell))
    return curves


def read_objective(card: dict | None, curves: dict[str, Curve]) -> Objective | None:
    """The run card's `objective` entry; without one (run cards older than the entry), the last
    `val/loss` of metrics.csv (minimised)."""
    entry = (card or {}).get("objective")
    if isinstance(entry, dict) and entry.get("name"):
        value = entry.get("value")
        return Objective(str(entry["name"]), None if value is None else float(value),
                         str(entry.get("direction", "minimize")), "run_card")
    val = curves.get("val/loss")
    if val and val.values:
        return Objective("val/loss", val.values[-1], "minimize", "metrics.csv")
    return None


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
