"""``python -m llmft.data.tasks [--out DIR] [--check]``: regenerate the bundled files, or only
compare them with a regeneration (``--check``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmft.data.tasks.files import BUNDLED_DIR, render_files, write_all
from llmft.data.tasks.registry import TASK_NAMES
from llmft.data.tasks.splits import SPLITS, generate


def _print_counts() -> None:
    header = f"{'task':<12}" + "".join(f"{s:>7}" for s in SPLITS)
    print(header)
    per = {s: generate(s) for s in SPLITS}
    for task in TASK_NAMES:
        print(f"{task:<12}" + "".join(f"{sum(r['task'] == task for r in per[s]):>7}" for s in SPLITS))
    print(f"{'total':<12}" + "".join(f"{len(per[s]):>7}" for s in SPLITS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmft.data.tasks", description="Regenerate the bundled task suite files."
    )
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR, help="output folder")
    parser.add_argument(
        "--check", action="store_true",
        help="regenerate in memory and fail if any file in --out differs",
    )
    args = parser.parse_args(argv)
    _print_counts()
    if args.check:
        files = render_files()
        bad = [
            name for name, data in files.items()
            if not (args.out / name).is_file() or (args.out / name).read_bytes() != data
        ]
        if bad:
            print(f"differs from regeneration in {args.out}: {', '.join(sorted(bad))}", file=sys.stderr)
            print("run `python -m llmft.data.tasks` to rewrite them", file=sys.stderr)
            return 1
        print(f"ok: {len(files)} files in {args.out} match the regeneration")
        return 0
    counts = write_all(args.out)
    for name, n in counts.items():
        print(f"wrote {args.out / name} ({n} rows)")
    return 0
