"""One source of rows: a local file, a local folder in a Hub layout, or a Hub dataset name.

`load_source` reads it, renames `columns`, applies the public `layout`'s adapter (layouts.py), then
shuffles (`shuffle_seed`) and keeps `limit_rows`. Every row carries `_source` (what error messages
name: the file path, or `<dataset>[:<config>]/<split>`) and `_line` (the 1-based line of a JSONL
file, else the record number in the split).

- `.jsonl` / `.json` files: `formats.read_rows` (exact line numbers); `.parquet` / `.csv` files through
  `datasets` as formats.read_rows does. Fingerprint: sha256 of the file's bytes.
- A folder, or a Hub name: `datasets` (`load_dataset_builder(path, name, revision)` then the split,
  the steps of `load_dataset`), so a folder with a README.md `configs:` section (custom split names
  such as train_prefs) reads exactly as the Hub dataset does. Fingerprint: the `datasets` fingerprint
  of the split, plus the revision.
- A Hub name never waits on the network: unless the Hub is off (`HF_HUB_OFFLINE`), a TCP probe of
  the endpoint decides within `PROBE_TIMEOUT` seconds; offline or unreachable, the dataset loads from
  the local `datasets` cache, and when it is not there the error says why and what to do.

The shuffle and the limit are drawn on record numbers before rows are materialised (adapters map
one row to one row, so this equals shuffling the adapted rows), so `limit_rows=1000` of a large Hub
split converts and validates 1000 rows (`datasets` still downloads and prepares the whole config once,
into its cache).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from llmft import network
from llmft.data import formats, layouts
from llmft.data.formats import DataFormatError

PROBE_TIMEOUT = 3.0  # seconds a Hub probe may take
FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv")
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class HubUnavailableError(ConnectionError):
    """A Hub dataset that can be neither downloaded now nor found in the local cache."""


@dataclass
class SourceSpec:
    """One source: the source fields of `conf/data/*.yaml` (DataSpec), or one `data.mixture` entry."""

    path: str
    format: str = "chat"  # the llmft format of the rows (after `columns` and `layout`)
    layout: str | None = None  # layouts.LAYOUTS: a public dataset's columns -> `format`
    name: str | None = None  # the dataset's config (gsm8k: main)
    split: str = "train"
    revision: str | None = None  # Hub branch, tag or commit
    columns: dict | None = None  # {source column: field} renames, before the layout
    limit_rows: int | None = None
    shuffle_seed: int | None = None
    weight: float = 1.0  # a mixture entry's weight

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("a data source needs a path (data.path=<file, folder or Hub name>)")
        self.path = str(self.path)
        if self.format not in formats.FORMATS:
            raise ValueError(f"data.format={self.format!r}: choose one of {', '.join(formats.FORMATS)}")
        if self.layout is not None:
            layout = layouts.get(self.layout)
            if self.format != layout.format:
                raise ValueError(f"data.layout={self.layout} yields {layout.format} rows, but data.format={self.format}: "
                                 f"set data.format={layout.format}")
        if self.columns is not None:
            self.columns = {str(k): str(v) for k, v in dict(self.columns).items()}
        if self.limit_rows is not None and self.limit_rows < 1:
            raise ValueError(f"data.limit_rows={self.limit_rows}: at least 1, or null for all rows")
        if self.weight <= 0:
            raise ValueError(f"data.mixture weight={self.weight} for {self.path}: must be positive")

    @classmethod
    def from_data_spec(cls, spec: Any, split: str | None = None) -> "SourceSpec":
        """The source a DataSpec names (`split` instead of spec.split, e.g. its val_split)."""
        return cls(path=spec.path, format=spec.format, layout=spec.layout, name=spec.name,
                   split=split or spec.split, revision=spec.revision, columns=spec.columns,
                   limit_rows=spec.limit_rows, shuffle_seed=spec.shuffle_seed)

    @classmethod
    def from_dict(cls, entry: dict) -> "SourceSpec":
        """A `data.mixture` entry; without `format`, a `layout` decides it. Unknown keys are an error."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(entry) - set(known))
        if unknown:
            raise ValueError(f"data.mixture entry {dict(entry)}: unknown key(s) {', '.join(unknown)}; "
                             f"an entry takes {', '.join(known)}")
        entry = dict(entry)
        if entry.get("layout") and "format" not in entry:
            entry["format"] = layouts.get(entry["layout"]).format
        return cls(**entry)

    @property
    def origin(self) -> str:
        """What messages name: a file's path, or `<dataset>[:<config>]/<split>`."""
        if Path(self.path).expanduser().is_file():
            return self.path
        return f"{self.path}{f':{self.name}' if self.name else ''}/{self.split}"


@dataclass
class SourceRows:
    rows: list[dict]  # rows of the spec's format, each with `_line` and `_source`
    origin: str  # what error messages name
    fingerprint: str  # sha256 of a file's bytes, or `datasets`' fingerprint (+ revision)
    files: list[Path]  # local files read
    read: int  # rows read (after limit_rows)


def load_source(spec: SourceSpec, split_option: str = "data.split") -> SourceRows:
    """The rows of one source: read, columns renamed, layout adapted, shuffled and limited (see the module).
    `split_option` names the setting that chose `spec.split` in errors (data.split, or data.val_split)."""
    path = Path(spec.path).expanduser()
    origin = spec.origin
    if path.is_file():
        table: Any = _tag(formats.read_rows(path), origin)
        columns = sorted({k for row in table for k in row if not k.startswith("_")})
        fingerprint, files = _sha256(path), [path]
    else:
        dataset, files = _load_dataset(spec, path, split_option)
        table, columns = dataset, list(dataset.column_names)
        fingerprint = dataset._fingerprint + (f"@{spec.revision}" if spec.revision else "")
    if spec.columns:
        table, columns = _rename(table, columns, spec.columns, origin)
    layout = layouts.get(spec.layout) if spec.layout else None
    if layout is not None:
        layouts.check_columns(layout, columns, origin)
    indices = _selection(len(table), spec.shuffle_seed, spec.limit_rows)
    rows = _materialise(table, indices, origin)
    if layout is not None:
        rows = layouts.adapt_rows(layout, rows, origin)
    return SourceRows(rows=rows, origin=origin, fingerprint=fingerprint, files=files, read=len(rows))


# --- reading -----------------------------------------------------------------------------------


def _tag(rows: list[dict], origin: str) -> list[dict]:
    return [{**row, "_source": origin} for row in rows]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_hub_name(path: str) -> bool:
    """Could `path` name a Hub dataset (`name` or `owner/name`) rather than a local file?"""
    return bool(HUB_NAME.match(path)) and not path.lower().endswith(FILE_SUFFIXES)


def _load_dataset(spec: SourceSpec, path: Path, split_option: str):
    """(the split as a `datasets.Dataset`, the local data files it was read from)."""
    if path.is_dir():
        return _build(str(path), spec, None, split_option)
    if not is_hub_name(spec.path):
        raise FileNotFoundError(f"data.path={spec.path}: no such file or folder (and not a Hub dataset name "
                                "such as owner/name)")
    import datasets

    offline = "the Hub is off (HF_HUB_OFFLINE is set)" if datasets.config.HF_HUB_OFFLINE else None
    if offline is None:
        failure = network.unreachable(datasets.config.HF_ENDPOINT, PROBE_TIMEOUT)
        offline = failure  # "huggingface.co:443 is unreachable (...)", or None
    if offline is None:
        return _build(spec.path, spec, spec.revision, split_option)
    try:
        with hub_offline():
            return _build(spec.path, spec, spec.revision, split_option)
    except (OSError, ConnectionError) as err:
        hint = ("unset HF_HUB_OFFLINE with network access to download it" if "HF_HUB_OFFLINE" in offline
                else "run once with network access to download it")
        raise HubUnavailableError(
            f"data.path={spec.path}: not a local file or folder, {offline}, and the dataset is not in the local "
            f"datasets cache ({datasets.config.HF_DATASETS_CACHE}) either ({type(err).__name__}). To train on it, "
            f"{hint} (later runs find it in the cache), or point data.path at a local copy: a .jsonl/.parquet "
            "file, or a folder in the Hub layout (README.md configs + data files)") from None


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """`datasets` and `huggingface_hub` in offline mode for a while: cached datasets only, no request."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _build(path: str, spec: SourceSpec, revision: str | None, split_option: str):
    """The steps of `datasets.load_dataset`, keeping the builder for its data files."""
    import datasets

    where = f"data.path={spec.path}" + (f" data.name={spec.name}" if spec.name else "")
    try:
        builder = datasets.load_dataset_builder(path, spec.name, revision=revision)
        builder.download_and_prepare()
        dataset = builder.as_dataset(split=spec.split)
    except ValueError as err:  # an unknown config or split: say which option to change
        raise ValueError(f"{where} {split_option}={spec.split}: {err}") from err
    data_files = (builder.config.data_files or {}).get(spec.split, []) if builder.config.data_files else []
    files = [Path(f) for f in data_files if Path(str(f)).is_file()]
    return dataset, files


# --- columns, selection, rows ------------------------------------------------------------------


def _rename(table: Any, columns: list[str], renames: dict, origin: str) -> tuple[Any, list[str]]:
    """Columns renamed {source column: field}; a missing column or a clash is named with the columns there are."""
    for old, new in renames.items():
        if old not in columns:
            raise DataFormatError(origin, None, f"data.columns renames column {old!r}, which the source does not have; "
                                  f"its columns: {', '.join(map(repr, columns))}")
        if new in columns and new not in renames:
            raise DataFormatError(origin, None, f"data.columns renames {old!r} to {new!r}, but the source already has "
                                  f"a column {new!r}: rename that one too, or choose another name")
    renamed = [renames.get(c, c) for c in columns]
    if isinstance(table, list):
        table = [{renames.get(k, k): v for k, v in row.items()} for row in table]
    else:
        table = table.rename_columns(renames)
    return table, renamed


def _selection(n: int, shuffle_seed: int | None, limit: int | None) -> list[int] | None:
    """Record indices to read, in order: all (None), a seeded shuffle, and/or the first `limit`."""
    if shuffle_seed is None and (limit is None or limit >= n):
        return None
    order = random.Random(shuffle_seed).sample(range(n), n) if shuffle_seed is not None else list(range(n))
    return order[:limit] if limit is not None else order


def _materialise(table: Any, indices: list[int] | None, origin: str) -> list[dict]:
    """Plain dict rows with `_line` (a file's own line, else the 1-based record number) and `_source`."""
    if isinstance(table, list):
        return table if indices is None else [table[i] for i in indices]
    chosen = range(len(table)) if indices is None else indices
    rows = table.to_list() if indices is None else table.select(indices).to_list()
    return [{**row, "_line": i + 1, "_source": origin} for i, row in zip(chosen, rows)]
