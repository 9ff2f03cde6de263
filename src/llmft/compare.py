"""Paired comparison of evaluated models on the same test rows, per task, with 95% intervals:

    python -m llmft.compare RUN_A[:MODEL] RUN_B[:MODEL] [RUN_C ...] [--json FILE]

Each argument is a folder with an `eval_predictions.jsonl` (a run folder from train.py, or an
evaluation folder from eval.py) and the model in it (`tuned`, the default, or `base`: the model the
run started from). Every later model is compared with the first, row by row (paired by example id):
exact match per task and overall, and the policy task's over-refusal (allowed requests answered with
the refusal). The bundled suite has 40 test rows a task, so per-task intervals are wide (about
+-15 points); read a difference as a finding only when its interval excludes 0.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmft.data.tasks import policy
from llmft.metrics.paired import PairedDifference, paired_difference

OVER_REFUSAL = "policy over-refusal"  # lower is better


def load_predictions(arg: str) -> dict[str, dict]:
    """{example id: record} of one model in `FOLDER[:MODEL]`."""
    folder, _, model = arg.partition(":")
    path = Path(folder) / "eval_predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{arg}: no {path} (evaluate the run first: python eval.py run_dir={folder})")
    records = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("model") == (model or "tuned") and "prediction" in rec:
                records[rec["id"]] = rec
    if not records:
        raise ValueError(f"{arg}: {path} has no generation records of model {model or 'tuned'!r}")
    return records


def paired_rows(first: dict[str, dict], other: dict[str, dict], names: tuple[str, str]) -> list[tuple[dict, dict]]:
    """The two models' records of the same examples; an error if they were scored on different rows."""
    if first.keys() != other.keys():
        only = sorted(first.keys() - other.keys())[:3], sorted(other.keys() - first.keys())[:3]
        raise ValueError(f"{names[0]} and {names[1]} were scored on different rows (only in the first: {only[0]}, "
                         f"only in the second: {only[1]}): evaluate both on the same split, tasks and limit")
    return [(first[i], other[i]) for i in sorted(first)]


def compare(first: dict[str, dict], other: dict[str, dict], names: tuple[str, str] = ("A", "B")) -> dict[str, PairedDifference]:
    """{task | "overall" | OVER_REFUSAL: paired difference (other - first)} of exact match, and of
    the refusal rate on allowed policy requests."""
    pairs = paired_rows(first, other, names)
    result = {}
    for task in sorted({a["task"] for a, _ in pairs}) + ["overall"]:
        chosen = [(a, b) for a, b in pairs if task in ("overall", a["task"])]
        result[task] = paired_difference([a["correct"] for a, _ in chosen], [b["correct"] for _, b in chosen])
    allowed = [(a, b) for a, b in pairs if a["task"] == "policy" and not policy.is_refusal(a["answer"])]
    if allowed:
        result[OVER_REFUSAL] = paired_difference([policy.is_refusal(a["prediction"]) for a, _ in allowed],
                                                 [policy.is_refusal(b["prediction"]) for _, b in allowed])
    return result


def format_comparison(names: tuple[str, str], result: dict[str, PairedDifference]) -> str:
    lines = [f"| task | n | {names[0]} | {names[1]} | difference | 95% interval |",
             "|---|---|---|---|---|---|"]
    for key, d in result.items():
        mark = " *" if d.excludes_zero() else ""
        lines.append(f"| {key} | {d.n} | {100 * d.mean_a:.1f} | {100 * d.mean_b:.1f} | {100 * d.diff:+.1f}{mark} "
                     f"| [{100 * d.low:+.1f}, {100 * d.high:+.1f}] |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmft.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="FOLDER[:MODEL] (MODEL: tuned or base); the first is the baseline")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("give at least two models to compare")
    loaded = [load_predictions(m) for m in args.models]
    figures = {}
    for name, records in zip(args.models[1:], loaded[1:]):
        result = compare(loaded[0], records, (args.models[0], name))
        print(f"\n{name} against {args.models[0]} (percent; * = interval excludes 0)\n")
        print(format_comparison((args.models[0], name), result))
        figures[name] = {k: vars(d) for k, d in result.items()}
    if args.json:
        args.json.write_text(json.dumps({"baseline": args.models[0], "comparisons": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
