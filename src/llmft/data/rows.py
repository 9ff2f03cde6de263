"""Where training rows come from (`conf/data/*.yaml`): the spec, and the rows of the view a method needs."""
from __future__ import annotations

import hashlib
import random
from collections import Counter
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from llmft.data import formats, quality, sources, tasks


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
    limit_val: int | None = None  # at most N validation rows (a Hub test split can be large)
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
    near_dup_threshold: float = 0.85  # Jaccard of word 5-gram sets (exact, MinHash only proposes pairs) from which a row is a duplicate
    contamination: str = "fail"  # fail | warn | off: validation/test rows overlapping training rows
    contamination_ngram: int = 8  # words per n-gram (PaLM's definition: >= 70% of a row's 8-grams seen in training)
    contamination_threshold: float = 0.7  # a held-out row is contaminated when this fraction of its n-grams is in training
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
    """The rows of one view and where they came from, for the data card.

    `dropped`: rows left out because something is wrong with them (duplicates; the encoders add
    truncation), counted against `data.max_dropped_fraction`. `skipped`: rows the view does not use by
    design (an unpaired row with label false is no SFT target), counted but never an error.
    """

    train: list[dict]
    val: list[dict]
    files: list[Path]
    dropped: dict[str, Counter] = field(default_factory=lambda: {"train": Counter(), "val": Counter()})
    skipped: Counter = field(default_factory=Counter)
    read: dict[str, int] = field(default_factory=dict)  # rows read per split, before anything is left out
    converted: dict[str, int] = field(default_factory=dict)  # rows of the view per split, before dedup (what
    # `data.max_dropped_fraction` is a fraction of: preference -> unpaired makes two rows of one)
    sources: list[dict] = field(default_factory=list)  # {origin, fingerprint, split, rows read, weight}
    mixture: dict | None = None  # per source: weight, rows available, rows drawn, repeats


def load_rows(spec: DataSpec, view: str, seed: int) -> Rows:
    """The training and validation rows of `view`: read, split, converted, mixed, deduplicated, limited.

    A source without a validation file or split is split before conversion, so every view (and the
    chat view evaluation reads) holds out the same rows whatever the conversion adds or drops.
    """
    if spec.source == "tasks":
        rows = deduplicated(bundled_rows(view), spec, seed)
    elif spec.source == "mixture":
        rows = mixture_rows(spec, view, seed)
    else:
        rows = deduplicated(source_rows(sources.SourceSpec.from_data_spec(spec), spec, view, seed), spec, seed)
    if spec.limit_train is not None:
        rows.train = random.Random(seed).sample(rows.train, min(spec.limit_train, len(rows.train)))
    return rows


def bundled_rows(view: str) -> Rows:
    bundled = BUNDLED_VIEWS[view]
    files = [tasks.bundled_path(bundled, s) for s in ("train", "val")]
    train, val = (tasks.load_bundled(bundled, s) for s in ("train", "val"))
    card = [{"origin": f"bundled:{path.name}", "fingerprint": file_sha256(path), "split": split, "read": len(r)}
            for path, split, r in zip(files, ("train", "val"), (train, val))]
    counts = {"train": len(train), "val": len(val)}
    return Rows(train=train, val=val, files=files, read=counts, converted=dict(counts), sources=card)


def source_rows(source: sources.SourceSpec, spec: DataSpec, view: str, seed: int) -> Rows:
    """One file or Hub source, with its validation rows from `val_path`, `val_split` or a seeded split."""
    loaded = sources.load_source(source)
    raw, card = loaded.rows, [source_card(loaded, source.split, source.weight)]
    files = list(loaded.files)
    if spec.val_split and Path(source.path).is_file():
        raise ValueError(f"data.val_split={spec.val_split}: {source.path} is one file, without splits; give "
                         "data.val_path=<file>, or leave both null and data.val_fraction holds rows out")
    if spec.val_path or spec.val_split:
        val_source = (dataclasses.replace(source, path=spec.val_path, name=None, split="train")
                      if spec.val_path else dataclasses.replace(source, split=spec.val_split))
        val_source = dataclasses.replace(val_source, limit_rows=spec.limit_val, shuffle_seed=spec.shuffle_seed or seed
                                         if spec.limit_val else None)
        held = sources.load_source(val_source, "data.val_split" if spec.val_split else "data.split")
        raw_val = held.rows
        files += held.files
        card.append(source_card(held, val_source.split if spec.val_split else "val", None))
    else:
        shuffled = random.Random(seed).sample(raw, len(raw))
        n_val = int(round(len(raw) * spec.val_fraction)) if len(raw) > 1 else 0
        if spec.limit_val is not None:
            n_val = min(n_val, spec.limit_val)
        raw_val, raw = shuffled[:n_val], shuffled[n_val:]
    train, skipped = formats.convert(raw, source.format, view, loaded.origin)
    val, val_skipped = formats.convert(raw_val, source.format, view, card[-1]["origin"])
    rows = Rows(train=train, val=val, files=files, skipped=skipped + val_skipped,
                read={"train": len(raw), "val": len(raw_val)}, converted={"train": len(train), "val": len(val)},
                sources=card)
    if not (spec.val_path or spec.val_split):
        rows.val, copies = without_training_copies(rows.train, rows.val)
        rows.dropped["val"] += copies
    return rows


def without_training_copies(train: list[dict], val: list[dict]) -> tuple[list[dict], Counter]:
    """Validation rows that llmft's own split took from a source holding the same row twice, whose copy
    went to training: removed and counted (the contamination check would otherwise fail the run for a
    split it made itself). Rows of a validation file or split are never removed: there the check decides."""
    seen = {quality.content_text(row) for row in train}
    kept = [row for row in val if quality.content_text(row) not in seen]
    removed = len(val) - len(kept)
    return kept, Counter({"copy of a training row (the source holds it twice; split by data.val_fraction)": removed}
                         if removed else {})


def mixture_rows(spec: DataSpec, view: str, seed: int) -> Rows:
    """Each source of `data.mixture` split, converted and deduplicated on its own (a row in two sources
    stays in both), then the training rows drawn by weight (repeats of a drawn row are deliberate)."""
    parts = [deduplicated(source_rows(source, dataclasses.replace(spec, val_path=None, val_split=val_split), view, seed),
                          spec, seed)
             for source, val_split in map(mixture_entry, spec.mixture)]
    weights = [float(entry.get("weight", 1.0)) for entry in spec.mixture]
    names = [part.sources[0]["origin"] for part in parts]
    train, report = mix([part.train for part in parts], weights, names, spec.mixture_size, seed)
    rows = Rows(train=train, val=[row for part in parts for row in part.val],
                files=[f for part in parts for f in part.files], mixture=report)
    for part in parts:
        rows.skipped += part.skipped
        for split, counts in part.dropped.items():
            rows.dropped[split] += counts
        rows.sources += part.sources
        for split, n in part.read.items():
            rows.read[split] = rows.read.get(split, 0) + n
        for split, n in part.converted.items():
            rows.converted[split] = rows.converted.get(split, 0) + n
    return rows


def mixture_entry(entry: dict) -> tuple[sources.SourceSpec, str | None]:
    """A `data.mixture` entry: its source, and the source's own validation split (if it names one)."""
    return sources.SourceSpec.from_dict({k: v for k, v in entry.items() if k != "val_split"}), entry.get("val_split")


def mix(parts: list[list[dict]], weights: list[float], names: list[str], size: int | None,
        seed: int) -> tuple[list[dict], dict]:
    """Draw `size` rows, a `weight / sum(weights)` share from each part (seeded, shuffled together).

    Without `size`, the mixture is as large as it can be without repeating a row: the part with the
    fewest rows for its share decides. A share larger than its part repeats whole copies of the part
    and then samples the rest; the repeats are counted in the report.
    """
    if any(w <= 0 for w in weights):
        raise ValueError(f"data.mixture weights must be positive, got {weights}")
    if any(not part for part in parts):
        empty = [name for name, part in zip(names, parts) if not part]
        raise ValueError(f"data.mixture: no training rows left in {', '.join(empty)}")
    shares = [w / sum(weights) for w in weights]
    if size is None:
        size = int(min(len(part) / share for part, share in zip(parts, shares)))
    rng = random.Random(seed)
    drawn, report = [], {}
    for name, part, share, weight in zip(names, parts, shares, weights):
        want = int(round(size * share))
        copies, rest = divmod(want, len(part))
        picked = part * copies + rng.sample(part, rest)
        drawn += picked
        report[name] = {"weight": weight, "share": round(share, 4), "available": len(part), "drawn": want,
                        "repeated": max(0, want - len(part))}
    rng.shuffle(drawn)
    return drawn, report


def deduplicated(rows: Rows, spec: DataSpec, seed: int) -> Rows:
    """`rows` with duplicates removed from each split (`data.dedup`), counted in `rows.dropped`."""
    for split in ("train", "val"):
        kept, duplicates = deduplicate(getattr(rows, split), spec, seed)
        setattr(rows, split, kept)
        rows.dropped[split] += duplicates
    return rows


def deduplicate(rows: list[dict], spec: DataSpec, seed: int) -> tuple[list[dict], Counter]:
    """Rows without duplicates of earlier rows (`data.dedup`), and the count removed by reason."""
    if spec.dedup == "none" or not rows:
        return rows, Counter()
    removed: Counter = Counter()
    # The system prompt counts here: the same request under two fact sheets is two lessons (the bundled
    # policy task); contamination compares user and assistant text only.
    exact = set(quality.exact_duplicates(rows, with_system=True))
    removed["exact duplicate of an earlier row"] = len(exact)
    kept = [row for i, row in enumerate(rows) if i not in exact]
    if spec.dedup == "near":
        near = set(quality.near_duplicates(kept, spec.near_dup_threshold, seed=seed, with_system=True))
        removed[f"near duplicate of an earlier row (Jaccard >= {spec.near_dup_threshold})"] = len(near)
        kept = [row for i, row in enumerate(kept) if i not in near]
    return kept, +removed


def source_card(loaded: sources.SourceRows, split: str | None, weight: float | None) -> dict:
    card = {"origin": loaded.origin, "fingerprint": loaded.fingerprint, "split": split, "read": loaded.read,
            "files": {str(f): file_sha256(f) for f in loaded.files}}
    if weight is not None and weight != 1.0:
        card["weight"] = weight
    return card


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
