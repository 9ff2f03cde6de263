"""Sweep comparison (llmft.report, sweeps/report.py) on a real tiny sweep: summary, HTML, W&B report."""
from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from llmft.report import SweepSummary, load_sweep, write_summary
from tests.conftest import ROOT

RUNS = ["0_sft-lora", "1_sft-lora", "2_sft-lora", "3_sft-lora"]
GRID = {"0_sft-lora": ("0.001", "4"), "1_sft-lora": ("0.001", "8"), "2_sft-lora": ("0.003", "4"), "3_sft-lora": ("0.003", "8")}


def copy_sweep(sweep: Path, dest: Path) -> Path:
    """A writable copy of the shared sweep (without the checkpoints, which nothing here reads)."""
    return Path(shutil.copytree(sweep, dest, ignore=shutil.ignore_patterns("checkpoints", "summary.*")))


def card_objective(run: Path) -> float:
    """The objective as the run itself recorded it: the run card's entry, else the last val/loss of metrics.csv."""
    card = json.loads((run / "run_card.json").read_text())
    if "objective" in card:
        assert card["objective"]["name"] == "val/loss" and card["objective"]["direction"] == "minimize"
        return card["objective"]["value"]
    with (run / "metrics.csv").open() as f:
        return [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")][-1]


def last_train_loss(run: Path) -> float:
    with (run / "metrics.csv").open() as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")][-1]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_summary_ranks_runs_on_the_validation_objective(tiny_sweep, tmp_path):
    sweep = copy_sweep(tiny_sweep, tmp_path / "sweep")
    csv_path, md_path = write_summary(sweep)
    assert (csv_path, md_path) == (sweep / "summary.csv", sweep / "summary.md")
    table = read_csv(csv_path)
    expected = sorted(RUNS, key=lambda name: card_objective(sweep / name))
    assert [row["run"] for row in table] == expected
    assert [row["rank"] for row in table] == ["1", "2", "3", "4"]
    assert len({card_objective(sweep / name) for name in RUNS}) == 4  # a real ranking, not ties
    for row in table:
        run = sweep / row["run"]
        assert row["status"] == "finished"
        assert (row["optim.lr"], row["peft.r"]) == GRID[row["run"]]  # the swept keys, and only those
        assert float(row["objective"]) == pytest.approx(card_objective(run), rel=1e-12)
        assert row["objective_name"] == "val/loss" and row["objective_direction"] == "minimize"
        assert float(row["final_train_loss"]) == pytest.approx(last_train_loss(run), rel=1e-12)
        results = json.loads((run / "eval.json").read_text())
        for model in ("tuned", "base"):
            for task, value in results[model]["exact_match"].items():
                assert float(row[f"exact_match/{model}/{task}"]) == pytest.approx(value)
    assert not {"model", "trainer.max_steps", "evaluation.limit"} & set(table[0])  # same in every run: not swept
    md = md_path.read_text()
    assert "4 runs: 4 finished, 0 unfinished." in md
    assert f"Best: `{expected[0]}`" in md and "not used to rank or select" in md
    assert md.index(f"| 1 | {expected[0]} |") < md.index(f"| 4 | {expected[-1]} |")


def test_the_hydra_callback_wrote_the_summary_at_the_end_of_the_sweep(tiny_sweep, tmp_path):
    # the fixture's sweep ran with hydra.callbacks.sweep_summary: its files are Hydra's, not a test's
    written = read_csv(tiny_sweep / "summary.csv")
    assert [row["run"] for row in written] == sorted(RUNS, key=lambda name: card_objective(tiny_sweep / name))
    # and called directly with the sweep's own multirun.yaml (pointed at a copy)
    sweep = copy_sweep(tiny_sweep, tmp_path / "sweep")
    config = OmegaConf.load(sweep / "multirun.yaml")
    config.hydra.sweep.dir = str(sweep)
    SweepSummary().on_multirun_end(config)
    assert read_csv(sweep / "summary.csv") == [dict(row, run_dir=str(sweep / row["run"])) for row in written]


def test_an_unfinished_run_is_counted_and_listed_not_dropped(tiny_sweep, tmp_path):
    sweep = copy_sweep(tiny_sweep, tmp_path / "sweep")
    ranked = sorted(RUNS, key=lambda name: card_objective(sweep / name))
    (sweep / ranked[0] / "run_card.json").unlink()  # the best run "did not finish"
    (sweep / ranked[0] / "eval.json").unlink()
    table = read_csv(write_summary(sweep)[0])
    assert [row["run"] for row in table] == ranked[1:] + ranked[:1]
    assert table[-1]["status"] == "unfinished" and table[-1]["rank"] == ""
    assert [row["rank"] for row in table[:3]] == ["1", "2", "3"]
    md = (sweep / "summary.md").read_text()
    assert f"4 runs: 3 finished, 1 unfinished (no run_card.json: failed or still running: {ranked[0]})." in md
    assert f"Best: `{ranked[1]}`" in md


def load_cli():
    spec = importlib.util.spec_from_file_location("sweeps_report", ROOT / "sweeps" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_errors_name_the_folder_and_what_is_missing(tiny_sweep, tmp_path, capsys):
    main = load_cli().main
    assert main([str(tmp_path / "nope")]) == 2
    assert f"sweep folder {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no run folders in it" in capsys.readouterr().err
    failed = tmp_path / "failed"
    copy_sweep(tiny_sweep / "0_sft-lora", failed / "0_sft-lora")
    (failed / "0_sft-lora" / "run_card.json").unlink()
    assert main([str(failed)]) == 2
    err = capsys.readouterr().err
    assert f"sweep folder {failed}: no finished runs (1 run folders, none has run_card.json" in err
    assert not (failed / "report.html").exists()


@pytest.fixture(scope="module")
def report(tiny_sweep, tmp_path_factory) -> Path:
    """report.html written by the command line into its own folder (the shared sweep is not touched),
    with --wandb offline."""
    out = tmp_path_factory.mktemp("report")
    proc = subprocess.run([sys.executable, "sweeps/report.py", str(tiny_sweep), "--out", str(out), "--wandb"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    *_, path, wandb_line = proc.stdout.strip().splitlines()
    assert path == str(out / "report.html")
    assert wandb_line.startswith("W&B report built but not saved: saving needs a connection to W&B and an API key; "
                                 "here: W&B mode is offline")
    return out / "report.html"


def test_html_report_is_self_contained_and_shows_the_ranking(report, tiny_sweep):
    html = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"<(script|link|iframe|object|embed)\b", html, re.I)
    sources = re.findall(r"""<img[^>]*\bsrc="([^"]*)\"""", html)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    beside = {name: (report.parent / name).read_bytes() for name in ("objective.png", "loss_curves.png", "exact_match.png")}
    assert [base64.b64decode(s.split(",", 1)[1]) for s in sources] == list(beside.values())  # the same PNGs, in order
    for data in beside.values():
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes the whole image
        assert image.format == "PNG" and image.width >= 400 and image.height >= 200
        assert len(image.convert("RGB").getcolors(1 << 20)) > 20  # something drawn, not a blank canvas
    best = min(RUNS, key=lambda name: card_objective(tiny_sweep / name))
    assert re.search(rf'<tr class="best"><td class="name">1</td><td class="name">{best}</td>', html)
    assert "Runs are ranked on val/loss (minimize, on the validation split" in html
    assert "4 runs: 4 finished, 0 unfinished." in html


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium): the HTML report's rendering is not checked")
    return path


# Appended to a copy of the report: after the load event, each image as Chromium decoded it (its
# size, and how many of its pixels came out not opaque after drawing it on a canvas: a truncated or
# broken PNG leaves transparent pixels, the report's figures have none), and the resources fetched;
# written into the DOM that --dump-dom prints.
PROBE = """<script>window.addEventListener("load", function () {
  var out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({
    images: Array.prototype.map.call(document.images, function (img) {
      if (!img.naturalWidth) return [0, 0, -1];
      var canvas = document.createElement("canvas");
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      var context = canvas.getContext("2d"); context.drawImage(img, 0, 0);
      var data = context.getImageData(0, 0, canvas.width, canvas.height).data, blank = 0;
      for (var k = 3; k < data.length; k += 4) if (data[k] < 255) blank++;
      return [img.naturalWidth, img.naturalHeight, blank];
    }),
    resources: performance.getEntriesByType("resource").map(function (e) { return e.name; }),
    height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});</script>"""


def run_chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                           "--disable-extensions", *args], capture_output=True, text=True, timeout=120)


def test_html_report_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    proc = run_chromium("--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1200,2000",
                        report.as_uri())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]  # no console message at all
    image = Image.open(shot)
    assert image.size == (1200, 2000)
    assert len(image.convert("RGB").getcolors(1 << 24)) > 100  # text, tables and plots, not a blank page

    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    proc = run_chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stderr[-3000:]
    state = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    sizes = [Image.open(report.parent / name).size for name in ("objective.png", "loss_curves.png", "exact_match.png")]
    assert state["images"] == [[w, h, 0] for w, h in sizes]  # every image decoded whole, at its own size
    assert state["resources"] == []  # nothing fetched: no network, no file beside it
    assert state["height"] > 1500


def test_wandb_report_is_built_offline_for_this_sweeps_runs(tiny_sweep, monkeypatch):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    from llmft.report.wandb_report import STEP, build_wandb_report, publish

    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = load_sweep(tiny_sweep)
    group = f"{tiny_sweep.parent.name}/tiny_sweep"  # as llmft.loggers groups a multirun's runs: <date>/<time>
    report = build_wandb_report(sweep, project="llmft-test", entity="")
    assert report.project == "llmft-test" and report.title == f"Sweep {tiny_sweep.parent.name} tiny_sweep"
    assert [type(b) for b in report.blocks] == [wr.MarkdownBlock, wr.H2, wr.PanelGrid, wr.H2, wr.MarkdownBlock]
    assert "ranked on val/loss" in report.blocks[0].text and f"Best: `{sweep.best.name}`" in report.blocks[0].text
    grid = report.blocks[2]
    [runset] = grid.runsets
    assert runset.project == "llmft-test"
    selected = expr.expr_to_filters(runset.filters)  # the one filter: W&B group == the sweep folder's name
    assert (selected.key.section, selected.key.name, selected.op, selected.value) == ("run", "group", "=", group)
    lines, coords, scalar, bars = grid.panels[:2], grid.panels[2], grid.panels[3], grid.panels[4]
    assert [(type(p), p.x, p.y) for p in lines] == [(wr.LinePlot, STEP, ["train/loss"]), (wr.LinePlot, STEP, ["val/loss"])]
    assert isinstance(coords, wr.ParallelCoordinatesPlot)
    assert [c.metric for c in coords.columns] == [wr.Config("optim.lr"), wr.Config("peft.r"), wr.SummaryMetric("val/loss")]
    assert isinstance(scalar, wr.ScalarChart) and scalar.metric == wr.SummaryMetric("val/loss")
    assert scalar.groupby_aggfunc == "min"
    assert isinstance(bars, wr.BarPlot) and wr.SummaryMetric("eval/tuned/exact_match/overall") in bars.metrics
    assert all(r.name in report.blocks[4].text for r in sweep.runs)
    # the spec W&B would store serialises without a connection (entity empty: no project lookup)
    spec = json.loads(report._to_model().spec.model_dump_json(by_alias=True, exclude_none=True))
    text = json.dumps(spec)
    assert '"name": "group"' in text and f'"value": "{group}"' in text and '"xAxis": "trainer/global_step"' in text
    assert publish(report).startswith("W&B report built but not saved: saving needs a connection")
    # a key but no server: still not saved, and the reason says which
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    message = publish(report)
    assert message.startswith("W&B report built but not saved") and "127.0.0.1:9 is unreachable" in message


def test_figures_plot_the_runs_values(tiny_sweep, tmp_path):
    from llmft.report import plots

    sweep = load_sweep(tiny_sweep)
    assert sweep.swept == ["optim.lr", "peft.r"]
    heat = plots.objective_chart(sweep).axes[0]
    grid = heat.images[0].get_array()  # rows peft.r 4, 8; columns optim.lr 0.001, 0.003
    for name, (lr, r) in GRID.items():
        assert grid[["4", "8"].index(r), ["0.001", "0.003"].index(lr)] == pytest.approx(card_objective(tiny_sweep / name))
    assert [t.get_text() for t in heat.get_xticklabels()] == ["0.001", "0.003"] and heat.get_ylabel() == "peft.r"
    train = plots.loss_curves(sweep).axes[0]
    assert sorted(tuple(line.get_ydata()) for line in train.lines) == sorted(
        tuple(float(r["train/loss"]) for r in read_csv(tiny_sweep / name / "metrics.csv") if r["train/loss"]) for name in RUNS)
    # one swept parameter (two runs that differ in optim.lr only): a point per run, best first
    pair = tmp_path / "pair"
    for name in ("0_sft-lora", "2_sft-lora"):
        copy_sweep(tiny_sweep / name, pair / name)
    one = load_sweep(pair)
    assert one.swept == ["optim.lr"]
    points = plots.objective_chart(one).axes[0].collections[0].get_offsets()
    assert list(points[:, 1]) == sorted(card_objective(pair / n) for n in ("0_sft-lora", "2_sft-lora"))
