"""The sweep's figures, drawn on matplotlib `Figure` objects with the Agg canvas.

No pyplot: no global figure state and no backend switch, so the same functions serve the
HTML report (PNG files) and a notebook (whatever backend it runs) alike.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from llmft.report.runs import is_number
from llmft.report.summary import digits
from llmft.report.sweep import Run, Sweep

__all__ = ["FIGURES", "exact_match_bars", "loss_curves", "objective_chart", "png_bytes", "save_figures"]

DPI = 100
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def colors(sweep: Sweep) -> dict[Path, str]:
    """One colour per run, by job number, the same in every figure."""
    return {r.folder: PALETTE[i % len(PALETTE)] for i, r in enumerate(by_job(sweep))}


def by_job(sweep: Sweep) -> list[Run]:
    return sorted(sweep.runs, key=lambda r: (r.num, r.name))


def _cmap(sweep: Sweep) -> str:
    return "viridis_r" if sweep.direction == "minimize" else "viridis"  # the better, the brighter


def _message(fig: Figure, ax, text: str) -> Figure:
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def loss_curves(sweep: Sweep) -> Figure:
    """train/loss per optimizer step of every run, overlaid; val/loss beside it."""
    fig = _figure(10, 4)
    train_ax, val_ax = fig.subplots(1, 2)
    palette = colors(sweep)
    for run in by_job(sweep):
        label = sweep.label(run) + ("" if run.finished else " (unfinished)")
        style = {"color": palette[run.folder], "linestyle": "-" if run.finished else "--"}
        for ax, name, marker in ((train_ax, "train/loss", None), (val_ax, "val/loss", "o")):
            curve = run.curves.get(name)
            if curve and curve.values:
                ax.plot(curve.steps, curve.values, marker=marker, label=label, **style)
    for ax, name in ((train_ax, "train/loss"), (val_ax, "val/loss")):
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, f"no {name} logged", ha="center", va="center", transform=ax.transAxes)
    if train_ax.lines:
        train_ax.legend(fontsize=8)
    return fig


def _axis_values(sweep: Sweep, key: str, runs: list[Run]) -> list:
    values = list(dict.fromkeys(sweep.value(r, key) for r in runs))
    if all(is_number(v) for v in values):
        return sorted(values)
    return sorted(values, key=str)


def objective_chart(sweep: Sweep) -> Figure:
    """The objective as a heat map over the two swept parameters (a scatter plot when the points were
    sampled rather than a grid); a point per run, ranked, otherwise."""
    runs = sweep.ranked
    if not runs:
        fig = _figure(6, 2)
        return _message(fig, fig.subplots(), "no finished run has an objective value")
    if len(sweep.swept) == 2:
        xs, ys = (_axis_values(sweep, key, runs) for key in sweep.swept)
        # a grid (every pair once or so) reads as a heat map; sampled points (Optuna) as a scatter plot
        return _heat_map(sweep, runs) if len(xs) * len(ys) <= 2 * len(runs) else _scatter(sweep, runs)
    return _objective_points(sweep, runs)


def _heat_map(sweep: Sweep, runs: list[Run]) -> Figure:
    xkey, ykey = sweep.swept
    xs, ys = _axis_values(sweep, xkey, runs), _axis_values(sweep, ykey, runs)
    grid = [[math.nan] * len(xs) for _ in ys]
    for run in runs:
        grid[ys.index(sweep.value(run, ykey))][xs.index(sweep.value(run, xkey))] = run.objective.value
    fig = _figure(max(5.0, 1.4 * len(xs) + 2.5), max(3.5, 0.9 * len(ys) + 1.8))
    ax = fig.subplots()
    image = ax.imshow(grid, cmap=_cmap(sweep), aspect="auto")
    fig.colorbar(image, ax=ax, label=sweep.objective_name)
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(xkey)
    ax.set_ylabel(ykey)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            ax.text(j, i, "no run" if math.isnan(value) else f"{value:.{digits(sweep)}g}", ha="center", va="center",
                    color="black", bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
    best = sweep.best
    bi, bj = ys.index(sweep.value(best, ykey)), xs.index(sweep.value(best, xkey))
    ax.add_patch(Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=3))
    ax.set_title(f"{sweep.objective_name} ({sweep.direction}; best outlined)")
    return fig


def _scatter(sweep: Sweep, runs: list[Run]) -> Figure:
    xkey, ykey = sweep.swept
    fig = _figure(6.5, 4.5)
    ax = fig.subplots()
    xs, ys = [sweep.value(r, xkey) for r in runs], [sweep.value(r, ykey) for r in runs]
    points = ax.scatter(xs, ys, c=[r.objective.value for r in runs], cmap=_cmap(sweep), s=80, edgecolors="black")
    ax.scatter([points.get_offsets()[0][0]], [points.get_offsets()[0][1]], s=300, facecolors="none", edgecolors="red",
               linewidths=2, label=f"best: {sweep.best.name}")
    for axis, values in ((ax.set_xscale, xs), (ax.set_yscale, ys)):
        if all(is_number(v) and v > 0 for v in values) and max(values) / min(values) >= 10:
            axis("log")
    fig.colorbar(points, ax=ax, label=sweep.objective_name)
    ax.set_xlabel(xkey)
    ax.set_ylabel(ykey)
    ax.legend(fontsize=8)
    ax.set_title(f"{sweep.objective_name} ({sweep.direction}) per run")
    return fig


def _objective_points(sweep: Sweep, runs: list[Run]) -> Figure:
    """A point per run, ranked, on an axis fitted to the values (bars from 0 would hide a 0.01
    difference of a loss near 10)."""
    fig = _figure(max(5.0, 0.8 * len(runs) + 2), 4)
    ax = fig.subplots()
    palette, places = colors(sweep), digits(sweep)
    values = [r.objective.value for r in runs]
    ax.scatter(range(len(runs)), values, c=[palette[r.folder] for r in runs], s=80, edgecolors="black", zorder=3)
    ax.scatter([0], values[:1], s=300, facecolors="none", edgecolors="red", linewidths=2, zorder=3)
    for i, value in enumerate(values):
        ax.annotate(f"{value:.{places}g}", (i, value), textcoords="offset points", xytext=(0, 10), ha="center", fontsize=8)
    crowded = len(runs) > 4
    ax.set_xticks(range(len(runs)), [sweep.label(r) for r in runs], rotation=30 if crowded else 0,
                  ha="right" if crowded else "center")
    ax.set_xlim(-0.5, len(runs) - 0.5)
    ax.margins(y=0.25)
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylabel(sweep.objective_name)
    ax.set_title(f"{sweep.objective_name} per run, best first ({sweep.direction}; best circled)")
    return fig


def exact_match_bars(sweep: Sweep) -> Figure:
    """Exact match per task (grouped bars: one bar per finished run, plus the base model when all
    runs share it)."""
    runs = [r for r in sweep.runs if r.finished and r.exact_match.get("tuned")]
    tasks = sweep.tasks
    fig = _figure(10, 4)
    ax = fig.subplots()
    if not runs or not tasks:
        return _message(fig, ax, "no exact match in the runs' eval.json")
    bases = {tuple(sorted(r.exact_match.get("base", {}).items())) for r in runs}
    series = [(sweep.label(r), r.exact_match["tuned"], colors(sweep)[r.folder], None) for r in runs]
    if len(bases) == 1 and runs[0].exact_match.get("base"):
        series.append(("base model", runs[0].exact_match["base"], "#cccccc", "//"))
    width = 0.8 / len(series)
    for k, (label, scores, color, hatch) in enumerate(series):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(tasks))]
        ax.bar(xs, [100 * scores.get(t, math.nan) for t in tasks], width, label=label, color=color, hatch=hatch,
               edgecolor="black" if hatch else None, linewidth=0.5)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylim(0, 100)
    if not any(scores.get(t) for _, scores, _, _ in series for t in tasks):
        ax.text(0.5, 0.5, "every exact match is 0%", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("exact match (%)")
    ax.set_title(f"exact match on the {sweep.eval_split} split (reported, not used to select)")
    ax.legend(fontsize=8, ncols=min(len(series), 4))
    return fig


FIGURES = {"loss_curves.png": loss_curves, "objective.png": objective_chart, "exact_match.png": exact_match_bars}


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save_figures(sweep: Sweep, out_dir: Path) -> dict[str, bytes]:
    """Draw every figure, write it as `<out_dir>/<name>.png`; return {file name: PNG bytes}."""
    from llmft.utils import write_bytes_atomic

    images = {name: png_bytes(draw(sweep)) for name, draw in FIGURES.items()}
    for name, data in images.items():
        write_bytes_atomic(out_dir / name, data)
    return images
