"""The sweep as a table: one row per run, best objective first (summary.csv, summary.md).

Selection is on the validation objective only; the exact match beside it (measured on the test
split by default) is reported, never used to rank.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from llmft.report.sweep import Run, Sweep, load_sweep
from llmft.utils import write_bytes_atomic

__all__ = ["digits", "fmt", "frame", "pct", "ranking", "rows", "summary_markdown", "write_summary"]


def rows(sweep: Sweep) -> list[dict]:
    """The summary table, ranked. Exact-match columns: `exact_match/<tuned|base>/<task>` (fractions)."""
    ranks = {r.folder: i + 1 for i, r in enumerate(sweep.ranked)}
    table = []
    for run in sweep.runs:
        row: dict = {"rank": ranks.get(run.folder), "run": run.name, "status": run.status}
        row.update({key: run.overrides[key][0] if key in run.overrides else None for key in sweep.swept})
        obj = run.objective
        row.update({f"objective{suffix}": getattr(obj, field) if obj else None for suffix, field in
                    (("_name", "name"), ("", "value"), ("_direction", "direction"), ("_source", "source"))})
        for model in ("tuned", "base"):
            row.update({f"exact_match/{model}/{t}": run.exact_match.get(model, {}).get(t) for t in sweep.tasks})
        row.update({"eval_split": run.eval_split, "final_train_loss": run.final_train_loss, "run_dir": str(run.folder)})
        table.append(row)
    return table


def frame(sweep: Sweep):
    """`rows` as a pandas DataFrame indexed by run (for notebooks; pandas comes with `datasets`)."""
    import pandas as pd

    return pd.DataFrame(rows(sweep)).set_index("run")


def fmt(value: object, significant: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{significant}g}" if isinstance(value, float) else str(value)


def digits(sweep: Sweep) -> int:
    """Significant digits that tell the runs' objective values apart (4 at least, 8 at most)."""
    values = {r.objective.value for r in sweep.ranked}
    return next((d for d in range(4, 8) if len({f"{v:.{d}g}" for v in values}) == len(values)), 8)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def selection_note(sweep: Sweep) -> str:
    """What was selected on and what is only reported, in one paragraph."""
    if sweep.objective_name is None:
        chosen = "nothing: no finished run has an objective (none in run_card.json, no val/loss in metrics.csv)"
    else:
        names = {"run_card": "run_card.json", "metrics.csv": "the last val/loss of metrics.csv"}
        sources = " and ".join(names[s] for s in sorted({r.objective.source for r in sweep.ranked}))
        chosen = f"{sweep.objective_name} ({sweep.direction}, on the validation split; from {sources})"
    note = (f"Runs are ranked on {chosen}. Exact match on the {sweep.eval_split} split is shown beside it "
            "and was not used to rank or select.")
    if len(sweep.objective_names) > 1:
        names = ", ".join(sweep.objective_names)
        note += f" Warning: the runs report different objectives ({names}); their values do not compare."
    return note


def counts_line(sweep: Sweep) -> str:
    line = f"{len(sweep.runs)} runs: {len(sweep.finished)} finished, {len(sweep.unfinished)} unfinished"
    if sweep.unfinished:
        line += f" (no run_card.json: failed or still running: {', '.join(r.name for r in sweep.unfinished)})"
    return line + "."


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def ranking(sweep: Sweep) -> tuple[list[str], list[tuple[Run, list[str]]]]:
    """The ranking as a header and (run, text cells) rows, best first: summary.md, the HTML report
    and the W&B report show this same table."""
    split, d = sweep.eval_split, digits(sweep)
    header = ["rank", "run", *sweep.swept, sweep.objective_name or "objective", f"{split} EM tuned %",
              f"{split} EM base %", "final train/loss", "status"]
    ranks = {r.folder: i + 1 for i, r in enumerate(sweep.ranked)}
    body = []
    for run in sweep.runs:
        tuned, base = (run.exact_match.get(model, {}).get("overall") for model in ("tuned", "base"))
        body.append((run, [fmt(ranks.get(run.folder)), run.name,
                           *[run.overrides[k][0] if k in run.overrides else "-" for k in sweep.swept],
                           fmt(run.objective.value if run.objective else None, d), pct(tuned), pct(base),
                           fmt(run.final_train_loss), run.status]))
    return header, body


def _em_cell(run: Run, task: str) -> str:
    tuned, base = (run.exact_match.get(model, {}).get(task) for model in ("tuned", "base"))
    return f"{pct(tuned)} ({pct(base)})"


def summary_markdown(sweep: Sweep) -> str:
    split, d = sweep.eval_split, digits(sweep)
    objective = sweep.objective_name or "objective"
    header, body = ranking(sweep)
    parts = [f"# Sweep summary: {sweep.folder}", "", selection_note(sweep), "", counts_line(sweep), ""]
    if sweep.best is not None:
        best = sweep.best
        parts += [f"Best: `{best.name}` {best_params(sweep, best)} ({objective} {fmt(best.objective.value, d)}).", ""]
    parts += [_md_table(header, [cells for _, cells in body]), ""]
    tasks = [t for t in sweep.tasks if t != "overall"]
    if tasks:
        parts += [f"## {split.capitalize()} exact match per task (%, tuned; base in brackets)", ""]
        task_body = [[run.name, *[_em_cell(run, t) for t in tasks]] for run in sweep.runs if run.finished]
        parts += [_md_table(["run", *tasks], task_body), ""]
    return "\n".join(parts)


def _csv_text(sweep: Sweep) -> str:
    table = rows(sweep)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in table)
    return out.getvalue()


def write_summary(sweep_dir: str | Path | Sweep, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write `summary.csv` and `summary.md` into the sweep folder (or `out_dir`); return their paths."""
    sweep = sweep_dir if isinstance(sweep_dir, Sweep) else load_sweep(sweep_dir)
    out = Path(out_dir).expanduser() if out_dir is not None else sweep.folder
    csv_path, md_path = out / "summary.csv", out / "summary.md"
    write_bytes_atomic(csv_path, _csv_text(sweep).encode("utf-8"))
    write_bytes_atomic(md_path, summary_markdown(sweep).encode("utf-8"))
    return csv_path, md_path


def best_params(sweep: Sweep, run: Run) -> str:
    return " ".join(f"{k}={run.overrides[k][0]}" for k in sweep.swept if k in run.overrides) or run.name
