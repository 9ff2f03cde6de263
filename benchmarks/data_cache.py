"""Start-up time with and without the tokenisation cache, on a fixture of about 50k chat rows.

    python benchmarks/data_cache.py [--rows 50000] [--keep DIR]

Writes the fixture (seeded, every row distinct, 1-3 turns), then runs `train.py model=tiny data=file` twice
with a fresh `data.cache_dir`: the first run tokenises every row (a miss) and fills the cache, the second
reads it back (a hit). One optimizer step each and no evaluation, so the difference is the data pipeline.
Prints each run's cache outcome, its start-up (the run card's startup_seconds: from the config to the first
training step, so reading, checking and encoding the rows and loading the model) and the ratio. A 0.2% validation
split (100 rows) keeps the end-of-run validation loss short; the contamination check runs as by default.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("apple river stone cloud market garden window silver planet quiet orange engine paper forest bright "
         "number yellow simple letter animal travel summer winter doctor village ocean mirror thunder castle").split()


def fixture_row(rng: random.Random, i: int) -> dict:
    messages = []
    for turn in range(rng.randint(1, 3)):
        question = " ".join(rng.choices(WORDS, k=rng.randint(5, 30)))
        answer = " ".join(rng.choices(WORDS, k=rng.randint(5, 80)))
        messages += [{"role": "user", "content": f"[{i}.{turn}] {question}?"},
                     {"role": "assistant", "content": answer.capitalize() + "."}]
    return {"id": f"row{i}", "messages": messages}


def write_fixture(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w") as out:
        for i in range(n):
            out.write(json.dumps(fixture_row(rng, i)) + "\n")


def timed_run(data: Path, cache: Path, out: Path) -> dict:
    command = [sys.executable, "train.py", "model=tiny", "data=file", f"data.path={data}", f"data.cache_dir={cache}",
               "trainer.max_steps=1", "evaluate=false", "data.val_fraction=0.002", f"hydra.run.dir={out}"]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    card = json.loads((out / "run_card.json").read_text())
    data_card = json.loads((out / "data_card.json").read_text())
    return {"outcome": data_card["tokenisation_cache"]["outcome"], "cache_seconds": data_card["tokenisation_cache"]["seconds"],
            "startup_s": card["startup_seconds"], "wall_s": wall, "examples": card["examples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--keep", type=Path, default=None, help="write fixture, cache and runs here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "chats.jsonl"
        write_fixture(data, args.rows)
        print(f"fixture: {args.rows} rows, {data.stat().st_size / 1e6:.1f} MB")
        runs = [timed_run(data, work / "cache", work / f"run{i}") for i in (1, 2)]
        for i, r in enumerate(runs, 1):
            print(f"run {i}: cache {r['outcome']:<7} start-up {r['startup_s']:7.1f} s (of which cache+encoding "
                  f"{r['cache_seconds']:6.1f} s), wall {r['wall_s']:6.1f} s, examples {r['examples']}")
        print(f"second run starts {runs[0]['startup_s'] / runs[1]['startup_s']:.1f}x faster "
              f"({runs[0]['startup_s'] - runs[1]['startup_s']:.1f} s saved)")


if __name__ == "__main__":
    main()
