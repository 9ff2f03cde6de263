"""The sweep's comparison as a W&B report (wandb-workspaces, `wandb_workspaces.reports.v2`).

The report object is built offline; only `Report.save()` talks to W&B (it looks the project up and
uploads the spec), so `publish` saves only when W&B credentials exist and the server answers.
"""
from __future__ import annotations

import os

from llmft.report.summary import best_params, counts_line, digits, fmt, ranking, selection_note
from llmft.report.sweep import Sweep

__all__ = ["STEP", "build_wandb_report", "online", "publish", "wandb_target"]

STEP = "trainer/global_step"  # Lightning's WandbLogger logs every metric against this step


def wandb_target(sweep: Sweep) -> tuple[str, str, str]:
    """(entity, project, group) the sweep's runs logged to: the runs' `logger.wandb.*` when they used
    `logger=wandb` and set them, else the defaults: entity "" (WANDB_ENTITY, else the API key's),
    project `llmft`, group the sweep folder as `<date folder>/<sweep folder>` (what llmft.loggers
    gives the runs of a multirun)."""
    from omegaconf import OmegaConf

    found = {}
    for run in sweep.runs:
        logger = OmegaConf.select(OmegaConf.load(run.folder / ".hydra" / "config.yaml"), "logger.wandb", default=None)
        if logger is not None:
            found = {k: OmegaConf.select(logger, k, default=None, throw_on_resolution_failure=False)
                     for k in ("entity", "project", "group")}
            break
    return (str(found.get("entity") or os.environ.get("WANDB_ENTITY", "")), str(found.get("project") or "llmft"),
            str(found.get("group") or "/".join(sweep.folder.parts[-2:])))


def _markdown_table(sweep: Sweep) -> str:
    header, body = ranking(sweep)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for _, cells in body])


def config_keys(sweep: Sweep) -> list[str]:
    """The swept keys that are plain values in the runs' config (W&B config columns); a swept config
    group (`peft=lora,qlora`) is a whole section there, not one value."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(sweep.runs[0].folder / ".hydra" / "config.yaml")
    return [k for k in sweep.swept
            if not OmegaConf.is_config(OmegaConf.select(config, k, default=None, throw_on_resolution_failure=False))]


def build_wandb_report(sweep: Sweep, project: str | None = None, entity: str | None = None,
                       group: str | None = None):
    """A `wandb_workspaces.reports.v2.Report` comparing the sweep's runs: the W&B runs of `project`
    whose group is `group` (defaults: `wandb_target`). Building it makes no W&B call; an empty
    entity is filled in by `publish` with the API key's default entity."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    default_entity, default_project, default_group = wandb_target(sweep)
    entity, project, group = entity or default_entity, project or default_project, group or default_group
    objective = sweep.objective_name or "val/loss"
    in_group = expr.And(expr.Metric("Group") == group)  # this sweep's runs only
    runset = wr.Runset(entity=entity, project=project, name=f"sweep {group}", filters=in_group)
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(key)) for key in config_keys(sweep)]
    columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(objective), display_name=objective))
    tasks = [f"eval/tuned/exact_match/{t}" for t in sweep.tasks]
    panels = [
        wr.LinePlot(title="train/loss", x=STEP, y=["train/loss"], layout=wr.Layout(x=0, y=0, w=12, h=8)),
        wr.LinePlot(title="val/loss", x=STEP, y=["val/loss"], layout=wr.Layout(x=12, y=0, w=12, h=8)),
        wr.ParallelCoordinatesPlot(title=f"{objective} over the swept parameters", columns=columns,
                                   layout=wr.Layout(x=0, y=8, w=16, h=8)),
        wr.ScalarChart(title=f"best {objective} ({sweep.direction})", metric=wr.SummaryMetric(objective),
                       groupby_aggfunc="min" if sweep.direction == "minimize" else "max",
                       layout=wr.Layout(x=16, y=8, w=8, h=8)),
        wr.BarPlot(title=f"exact match per task ({sweep.eval_split}, reported, not selected on)",
                   metrics=[wr.SummaryMetric(t) for t in tasks] or [wr.SummaryMetric("eval/tuned/exact_match/overall")],
                   orientation="v", layout=wr.Layout(x=0, y=16, w=24, h=8)),
    ]
    best = sweep.best
    intro = [selection_note(sweep), counts_line(sweep)]
    if best is not None:
        value = fmt(best.objective.value, digits(sweep))
        intro.append(f"Best: `{best.name}` {best_params(sweep, best)} ({objective} {value}).")
    return wr.Report(
        project=project, entity=entity, title=f"Sweep {group.replace('/', ' ')}", width="fluid",
        description=f"Runs of the sweep folder {sweep.folder} (W&B group {group}), ranked on {objective}.",
        blocks=[
            wr.MarkdownBlock(text="\n\n".join(intro)),
            wr.H2(text="Curves and objective"),
            wr.PanelGrid(runsets=[runset], panels=panels),
            wr.H2(text="Runs, best first (from the local run folders)"),
            wr.MarkdownBlock(text=_markdown_table(sweep)),
        ],
    )


def online(timeout: float = 5.0) -> tuple[bool, str]:
    """(True, why) when W&B credentials exist and the server answers, else (False, why not): the
    decision a run with `logger=wandb` makes (llmft.loggers.wandb_mode)."""
    from llmft.loggers.wandb_mode import decide_mode

    decision = decide_mode(None, timeout)
    return decision.mode == "online", decision.reason


def publish(report) -> str:
    """Save the report when online and return its URL; offline, say why nothing was saved."""
    ok, why = online()
    if not ok:
        return f"W&B report built but not saved: saving needs a connection to W&B and an API key; here: {why}."
    if not report.entity:
        import wandb

        report.entity = wandb.Api().default_entity
        for block in report.blocks:
            for runset in getattr(block, "runsets", []):
                runset.entity = runset.entity or report.entity
    report.save()
    return f"W&B report saved: {report.url}"
