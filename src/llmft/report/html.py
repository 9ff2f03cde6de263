"""A self-contained HTML report of a sweep: one file, figures embedded as base64 PNGs, inline CSS,
no script and no external resource (it opens offline, attached to a mail or a ticket)."""
from __future__ import annotations

import base64
import datetime
from html import escape
from pathlib import Path

from llmft.report.summary import best_params, counts_line, digits, fmt, pct, ranking, selection_note
from llmft.report.sweep import Run, Sweep, SweepError, load_sweep
from llmft.utils import write_bytes_atomic

__all__ = ["write_report", "report_html"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; font-family: monospace; }
tr.best td { background: #e8f5e9; font-weight: 600; } tr.unfinished td { color: #999; }
.note { background: #fff8e1; border-left: 4px solid #f9a825; padding: 0.6em 1em; }
.warn { background: #ffebee; border-left: 4px solid #c62828; padding: 0.6em 1em; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def _table(header: list[str], body: list[tuple[str, list[str]]], left: int = 1) -> str:
    """Rows as (css class, cells); the first `left` columns are names (left-aligned)."""
    def cells(tag: str, texts: list[str]) -> str:
        return "".join(f'<{tag} class="name">{escape(t)}</{tag}>' if i < left else f"<{tag}>{escape(t)}</{tag}>"
                       for i, t in enumerate(texts))

    lines = [f"<table><thead><tr>{cells('th', header)}</tr></thead><tbody>"]
    lines += [f'<tr class="{css}">{cells("td", row)}</tr>' for css, row in body]
    return "\n".join(lines + ["</tbody></table>"])


def _best_table(sweep: Sweep) -> str:
    header, body = ranking(sweep)
    rows = [("best" if run is sweep.best else ("" if run.finished else "unfinished"), cells) for run, cells in body]
    return _table(header, rows, left=2)


def _task_table(sweep: Sweep) -> str:
    runs = [r for r in sweep.runs if r.finished and r.exact_match.get("tuned")]
    if not runs or not sweep.tasks:
        return "<p>No exact match in the runs' eval.json.</p>"
    tasks = sweep.tasks

    def cells(run: Run) -> list[str]:
        return [run.name, sweep.label(run), *[pct(run.exact_match["tuned"].get(t)) for t in tasks]]

    body = [("best" if r is sweep.best else "", cells(r)) for r in runs]
    base = runs[0].exact_match.get("base")
    if base and all(r.exact_match.get("base") == base for r in runs):
        body.append(("", ["base model", "", *[pct(base.get(t)) for t in tasks]]))
    return _table(["run", "parameters", *tasks], body, left=2)


def report_html(sweep: Sweep, images: dict[str, bytes]) -> str:
    """The page; `images` maps figure file names to PNG bytes (embedded as data URIs)."""
    def img(name: str, alt: str) -> str:
        data = base64.b64encode(images[name]).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'

    best = sweep.best
    best_line = ""
    if best is not None:
        best_line = (f"<p>Best: <code>{escape(best.name)}</code> {escape(best_params(sweep, best))} "
                     f"({escape(sweep.objective_name)} {fmt(best.objective.value, digits(sweep))}).</p>")
    counts = f'<p class="{"warn" if sweep.unfinished else "counts"}">{escape(counts_line(sweep))}</p>'
    swept = ", ".join(sweep.swept) or "nothing (one configuration)"
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sweep report: {escape(sweep.folder.name)}</title>
<style>{CSS}</style></head>
<body>
<h1>Sweep report: {escape(sweep.folder.name)}</h1>
<p>Sweep folder <code>{escape(str(sweep.folder))}</code>; swept: {escape(swept)}; generated {now}.</p>
<p class="note">{escape(selection_note(sweep))}</p>
{counts}
{best_line}
<h2>Runs, best first</h2>
{_best_table(sweep)}
<h2>Objective</h2>
{img("objective.png", f"{sweep.objective_name} per configuration")}
<h2>Loss curves</h2>
{img("loss_curves.png", "train/loss and val/loss per step, every run")}
<h2>Exact match per task ({escape(sweep.eval_split)} split, %, tuned)</h2>
{_task_table(sweep)}
{img("exact_match.png", "exact match per task")}
<p>Made by <code>python sweeps/report.py {escape(str(sweep.folder))}</code> from each run's run_card.json,
metrics.csv and eval.json; the figures are also beside this file as PNGs.</p>
</body></html>
"""


def write_report(sweep_dir: str | Path | Sweep, out_dir: str | Path | None = None) -> Path:
    """Write `report.html` (self-contained) and its PNGs into `out_dir` (default: the sweep folder);
    return the path of report.html. Nothing else is written (summary.* is `write_summary`'s)."""
    from llmft.report.plots import save_figures

    sweep = sweep_dir if isinstance(sweep_dir, Sweep) else load_sweep(sweep_dir)
    if not sweep.finished:
        raise SweepError(f"sweep folder {sweep.folder}: no finished runs ({len(sweep.runs)} run folders, none has "
                         "run_card.json: they failed or are still running; see their train.log)")
    out = Path(out_dir).expanduser() if out_dir is not None else sweep.folder
    out.mkdir(parents=True, exist_ok=True)
    images = save_figures(sweep, out)
    path = out / "report.html"
    write_bytes_atomic(path, report_html(sweep, images).encode("utf-8"))
    return path
