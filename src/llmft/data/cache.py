"""The tokenisation cache: encoded examples kept on disk, so a second run (and every run of a sweep)
starts without re-tokenising.

A *shelf* holds the examples of one source's rows (a file, a Hub split: the rows' `_source`) in one
encoding setting: the tokenizer (its vocabulary and merges), the chat template actually used,
`max_length`, the view and the encoders' version. Within a shelf an example is found by the hash of
the row it came from, so a shelf serves any selection of rows (another seed's sample, a mixture, a
limit): a source's rows are cached once and a changed row is simply a miss. The source's fingerprint (file hashes or the `datasets` fingerprint) is recorded by
the data card; the row hashes are what make a hit exact.

On disk a shelf is one `.npz` (no pickle): per token field, all examples' lists concatenated into an
int32 array with offsets, and the rest (scalars, `meta`, drop reasons, row hashes) as one JSON
string. It is written atomically (temporary file, then rename); concurrent runs of a sweep can only
lose each other's additions, which are then misses next time.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmft.data.encoders import encode_row
from llmft.data.templates import ChatRenderer

log = logging.getLogger(__name__)

ENCODER_VERSION = "encoders-v1"  # part of every shelf's key: change it when an encoder's output changes


def row_hash(row: dict) -> str:
    """A row's content hash. `_line`/`_source` are where it was read, not what it is: left out."""
    content = {k: v for k, v in row.items() if k not in ("_line", "_source")}
    return hashlib.sha1(json.dumps(content, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """The tokenizer's identity: its full serialisation when it is a fast tokenizer, else its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    specials = json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)
    return hashlib.sha256((text + specials).encode()).hexdigest()[:16]


@dataclass
class CacheStats:
    """What one run found in the cache: examples reused (hits) and encoded now (misses)."""

    hits: int = 0
    misses: int = 0
    seconds: float = 0.0
    shelves: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if self.misses == 0 and self.hits:
            return "hit"
        return "miss" if self.hits == 0 else "partial"

    def as_dict(self) -> dict:
        return {"outcome": self.outcome, "hits": self.hits, "misses": self.misses,
                "seconds": round(self.seconds, 2), "shelves": self.shelves}


class TokenCache:
    """Encodes rows of a view through the cache under `root` (`data.cache_dir`)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.stats = CacheStats()
        self._open: dict[Path, dict[str, dict | str]] = {}  # shelves read by this run (train, then val: one read)

    def shelf_path(self, renderer: ChatRenderer, view: str, source: str) -> Path:
        """The shelf of one source's rows (a file, a Hub split; `_source` of the rows) in one encoding
        setting: a run loads and rewrites only the shelves of the sources it reads."""
        key = json.dumps([tokenizer_fingerprint(renderer.tokenizer), renderer.template_hash, renderer.max_length,
                          view, ENCODER_VERSION])
        setting = hashlib.sha256(key.encode()).hexdigest()[:20]
        return self.root / f"{view}-{setting}-{hashlib.sha256(source.encode()).hexdigest()[:12]}.npz"

    def encode_rows(self, rows: list[dict], renderer: ChatRenderer, view: str) -> tuple[list[dict], Counter]:
        """`encoders.encode_rows` through the cache: the same examples and drop counts, in row order."""
        started = time.perf_counter()
        by_source: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            by_source.setdefault(str(row.get("_source") or "rows without a source"), []).append(i)
        entries: list[dict | str] = [""] * len(rows)
        for source, indices in by_source.items():
            path = self.shelf_path(renderer, view, source)
            if path not in self._open:
                self._open[path] = load_shelf(path)
            shelf = self._open[path]
            added = 0
            for i in indices:
                key = row_hash(rows[i])
                if key not in shelf:
                    shelf[key] = encode_row(rows[i], renderer, view)
                    added += 1
                entries[i] = shelf[key]
            if added:
                save_shelf(path, shelf)
            self.stats.hits += len(indices) - added
            self.stats.misses += added
            if path.name not in self.stats.shelves:
                self.stats.shelves.append(path.name)
            log.info("tokenisation cache %s (%s): %d of %d %s rows reused, %d encoded", path, source,
                     len(indices) - added, len(indices), view, added)
        examples, dropped = [], Counter()
        for entry in entries:
            if isinstance(entry, str):
                dropped[entry] += 1
            else:
                examples.append(dict(entry))  # rows equal in content share an entry: each gets its own dict
        self.stats.seconds += time.perf_counter() - started
        return examples, dropped


def load_shelf(path: Path) -> dict[str, dict | str]:
    """{row hash: example or drop reason}; an unreadable shelf is a miss, never an error."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info"]))
            arrays = {name: (data[f"{name}.values"], data[f"{name}.offsets"]) for name in info["token_fields"]}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # damaged: a miss
        log.warning("tokenisation cache %s unreadable (%s): encoding again", path, err)
        return {}
    shelf: dict[str, dict | str] = {}
    for i, (key, rest) in enumerate(zip(info["hashes"], info["rest"])):
        if isinstance(rest, str):
            shelf[key] = rest
            continue
        example = {k: v for k, v in rest.items() if k not in ("_token_fields", "_slots")}
        for name in rest["_token_fields"]:
            values, offsets = arrays[name]
            j = rest["_slots"][name]
            example[name] = values[offsets[j]:offsets[j + 1]].tolist()
        shelf[key] = example
    return shelf


def save_shelf(path: Path, shelf: dict[str, dict | str]) -> None:
    """Write the shelf atomically (see the module docstring for the layout)."""
    token_lists: dict[str, list[list[int]]] = {}
    hashes, rest = [], []
    for key, entry in shelf.items():
        hashes.append(key)
        if isinstance(entry, str):
            rest.append(entry)
            continue
        names = [k for k, v in entry.items() if isinstance(v, list) and k != "meta"]
        slots = {}
        for name in names:
            slots[name] = len(token_lists.setdefault(name, []))
            token_lists[name].append(entry[name])
        rest.append({**{k: v for k, v in entry.items() if k not in names}, "_token_fields": names, "_slots": slots})
    arrays = {}
    for name, lists in token_lists.items():
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        arrays[f"{name}.offsets"] = np.concatenate([[0], np.cumsum(lengths)])
        arrays[f"{name}.values"] = np.array(list(itertools.chain.from_iterable(lists)), dtype=np.int32)
    info = {"hashes": hashes, "rest": rest, "token_fields": list(token_lists), "version": ENCODER_VERSION}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, info=np.array(json.dumps(info, ensure_ascii=False)), **arrays)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
