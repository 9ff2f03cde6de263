"""Compare the runs of a sweep: report.html (self-contained), its PNGs, summary.csv and summary.md.

    python sweeps/report.py <sweep dir> [--out DIR] [--wandb] [--project P] [--entity E]

<sweep dir> is the folder of a `python train.py -m ...` sweep (runs/multirun/<date>/<time>...).
The files go into it, or into --out DIR. Runs are ranked on their validation objective; test exact match is shown, never used to rank.
--wandb also builds the comparison as a W&B report and saves it when W&B is reachable and an API
key is set (offline it is built, checked and not saved: saving needs a connection).
"""
from __future__ import annotations

import argparse
import sys

from llmft.report import SweepError, load_sweep, write_report, write_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="the sweep folder (one sub-folder per run)")
    parser.add_argument("--out", help="where the files go (default: the sweep folder)")
    parser.add_argument("--wandb", action="store_true", help="also build (and, online, save) a W&B report")
    parser.add_argument("--project", help="W&B project of the runs (default: their logger.wandb.project, else llmft)")
    parser.add_argument("--entity", default="", help="W&B entity (default: the API key's default entity)")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep_dir)
        path = write_report(sweep, args.out)
        summary, _ = write_summary(sweep, args.out)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(sweep.finished)} finished, {len(sweep.unfinished)} unfinished runs; "
          f"summary: {summary.with_suffix('.md')}")
    if sweep.unfinished:
        print(f"unfinished (no run_card.json): {', '.join(r.name for r in sweep.unfinished)}")
    print(path)
    if args.wandb:
        from llmft.report.wandb_report import build_wandb_report, publish

        report = build_wandb_report(sweep, project=args.project, entity=args.entity)
        print(publish(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
