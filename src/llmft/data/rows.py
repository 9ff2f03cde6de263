"""Where training rows come from (`conf/data/*.yaml`): the spec, and the rows of the view a method needs."""
from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from llmft.data import formats, tasks


# The bundled suite's file for each view a method can ask for.
BUNDLED_VIEWS = {"chat": "chat", "pair": "preference", "unpaired": "unpaired", "prompt": "prompt"}


SOURCES = ("tasks", "file", "hub", "mixture")
DEDUP = ("none", "exact", "near")
CONTAMINATION_ACTIONS = ("fail", "warn", "off")


@dataclass
class DataSpec:
    """`conf/data/*.yaml` (every option is documented in conf/data/tasks.yaml and the README).

    `source`: `tasks` the bundled suite; `file` a local file in `format`; `hub` a dataset through the
    `datasets` library (a Hub name, or a local folder or file in a Hub layout), adapted by `layout`;
    `mixture` several file/hub sources (`mixture`, each a dict of the source fields plus `weight`).
    """

    source: str = "tasks"
    # -- one file or Hub source (source=file|hub) --
    path: str | None = None
    format: str = "chat"  # the llmft row format the source holds (after `layout` and `columns`)
    layout: str | None = None  # a public layout's adapter (alpaca, ultrachat, ultrafeedback, hh_rlhf, kto_mix, gsm8k)
    name: str | None = None  # the Hub dataset's config
    split: str = "train"
    revision: str | None = None
    columns: dict | None = None  # {source column: field} renames, applied before the layout
    limit_rows: int | None = None  # read at most N rows of the source (after `shuffle_seed`'s shuffle)
    shuffle_seed: int | None = None  # shuffle the source before `limit_rows` (null: keep its order)
    val_path: str | None = None  # a separate validation file (source=file)
    val_split: str | None = None  # the source's own validation split (source=hub), e.g. test_prefs
    val_fraction: float = 0.05  # split off the training rows (seeded) when there is neither
    # -- several sources --
    mixture: list | None = None  # [{path, format, layout, ..., weight}, ...]
    mixture_size: int | None = None  # training rows drawn by weight; null = as many as no source repeats
    # -- batching --
    batch_size: int = 8  # micro-batch: examples per forward pass
    max_length: int = 512
    limit_train: int | None = None  # first N training rows after shuffling, for quick runs
    num_workers: int = 0
    packing: bool = False  # pack each optimizer window's examples into max_length rows (per-document attention)
    chat_template: str | None = None  # null: the tokenizer's; else a bundled template name or a .jinja file
    # -- what is dropped, and checked --
    max_dropped_fraction: float = 0.1  # stop when more of the rows read than this are dropped
    dedup: str = "exact"  # none | exact | near (MinHash, needs `pip install .[quality]`)
    near_dup_threshold: float = 0.85  # estimated Jaccard similarity of word 5-gram sets that counts as a duplicate
    contamination: str = "fail"  # fail | warn | off: validation/test rows overlapping training rows
    contamination_ngram: int = 13  # words per n-gram
    contamination_threshold: float = 0.5  # an eval row is contaminated when this fraction of its n-grams is in training
    cache_dir: str | None = None  # tokenised examples, keyed by source, tokenizer, template, max_length; null = off

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data.source={self.source!r}: choose one of {', '.join(SOURCES)}")
        if self.source in ("file", "hub") and not self.path:
            raise ValueError(f"data={self.source} needs data.path=<file or Hub name> (and data.format=<chat|alpaca|...>)")
        if self.source == "mixture" and not self.mixture:
            raise ValueError("data.source=mixture needs data.mixture=[{path: ..., weight: ...}, ...]")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size={self.batch_size}: must be at least 1")
        if self.dedup not in DEDUP:
            raise ValueError(f"data.dedup={self.dedup!r}: choose one of {', '.join(DEDUP)}")
        if self.contamination not in CONTAMINATION_ACTIONS:
            raise ValueError(f"data.contamination={self.contamination!r}: choose one of {', '.join(CONTAMINATION_ACTIONS)}")
        if not 0.0 <= self.max_dropped_fraction <= 1.0:
            raise ValueError(f"data.max_dropped_fraction={self.max_dropped_fraction}: must be in [0, 1]")
        if self.columns is not None:
            self.columns = dict(self.columns)
        if self.mixture is not None:
            self.mixture = [dict(m) for m in self.mixture]


@dataclass
class Rows:
    """The rows of one view, their source files (for the run card) and what was left out, by reason."""

    train: list[dict]
    val: list[dict]
    files: list[Path]
    dropped: Counter


def load_rows(spec: DataSpec, view: str, seed: int) -> Rows:
    if spec.source == "tasks":
        bundled = BUNDLED_VIEWS[view]
        files = [tasks.bundled_path(bundled, s) for s in ("train", "val")]
        train, val = (tasks.load_bundled(bundled, s) for s in ("train", "val"))
        dropped: Counter = Counter()
    else:
        # Split the file's rows before converting them: every view (and the chat view evaluation
        # reads) then holds out the same rows, whatever the conversion adds or drops.
        raw, files = formats.read_rows(spec.path), [Path(spec.path)]
        if spec.val_path:
            raw_val = formats.read_rows(spec.val_path)
            files.append(Path(spec.val_path))
        else:
            shuffled = random.Random(seed).sample(raw, len(raw))
            n_val = int(round(len(raw) * spec.val_fraction)) if len(raw) > 1 else 0
            raw_val, raw = shuffled[:n_val], shuffled[n_val:]
        train, dropped = formats.convert(raw, spec.format, view, spec.path)
        val, val_dropped = formats.convert(raw_val, spec.format, view, spec.val_path or spec.path)
        dropped += val_dropped
    if spec.limit_train is not None:
        train = random.Random(seed).sample(train, min(spec.limit_train, len(train)))
    return Rows(train=train, val=val, files=files, dropped=dropped)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
