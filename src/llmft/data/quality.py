"""Data quality: exact and near-duplicate removal, and contamination of eval rows by training rows.

Pure functions over rows in llmft's views (chat, pair, unpaired, prompt; see formats.py). They all
compare a row's *content*, :func:`content_text`: what the user asked and what the assistant
answered, not what the template or the environment adds.

- Counted in: user messages; assistant messages (a tool call as its JSON text, as the model writes
  it, :func:`templates.assistant_text`); a pair row's prompt, chosen and rejected answers in that
  order; an unpaired row's prompt and completion; a prompt row's prompt and its reference `answer`
  (so a prompt row and the chat row that answers it with that answer have the same content).
- Left out: system messages and tool schemas (instructions and listings shared by many rows: a
  fact sheet, a persona, the tools on offer) and tool results (the environment's output, often
  boilerplate JSON; not what a model learns to write). An unpaired row's `label` is not content.
- Normalised: Unicode NFKC, case-folded, whitespace runs collapsed to one space within a message;
  messages are joined by a newline, so that the boundary between turns still counts for exact
  matches ("a b" + "c" is not "a" + "b c"), while word n-grams (split on any whitespace) run
  across turns.

Dedup keeps the first of equal rows (:func:`exact_duplicates`) or of similar ones
(:func:`near_duplicates`: MinHash LSH proposes candidates, the exact Jaccard similarity of the
word-shingle sets decides, so a reported count is never a MinHash estimate). Both take
`with_system=True` to count system messages as content: rows that differ only in their system
prompt (the bundled `policy` rows: one refusal to the same request, under different fact sheets)
are then kept as the different training examples they are.

Contamination (:func:`contamination`): for every eval split, the rows whose content equals a
training row's, and the rows of which at least `threshold` of the word n-grams occur in training.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from llmft.data.templates import assistant_text

NEAR_DEDUP_INSTALL = "data.dedup=near needs: pip install -e '.[quality]' (datasketch)"
DOWNGRADE_HINT = "data.contamination=warn (report and go on) or data.contamination=off (skip the check)"
SHOWN_REFS = 5  # ids/lines a message names per split before "and N more"

_WHITESPACE = re.compile(r"\s+")


# ----------------------------------------------------------------------------------------------
# content


def _normalise(text: str) -> str:
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _message_texts(messages: Iterable[dict], with_system: bool = False) -> list[str]:
    """User and assistant texts of a message list (and system texts when asked); tool results are left out."""
    out = []
    for message in messages:
        role = message.get("role")
        if role == "user" or (with_system and role == "system"):
            out.append(message.get("content") or "")
        elif role == "assistant":
            out.append(assistant_text(message))
    return out


def _as_messages(value, role: str) -> list[dict]:
    """A view field as messages: views hold message lists, but a bare string is accepted too."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return list(value or [])


def content_text(row: dict, with_system: bool = False) -> str:
    """The normalised user and assistant text of a row of any view (see the module docstring).

    `with_system` counts system messages too: for dedup, where two rows that differ only in their
    system prompt (a different fact sheet or persona) are different training examples.
    """
    if "messages" in row:  # chat
        parts = _message_texts(row["messages"], with_system)
    elif "chosen" in row:  # pair
        parts = _message_texts(_as_messages(row.get("prompt"), "user")
                               + _as_messages(row["chosen"], "assistant")
                               + _as_messages(row.get("rejected"), "assistant"), with_system)
    elif "completion" in row:  # unpaired
        parts = _message_texts(_as_messages(row.get("prompt"), "user")
                               + _as_messages(row["completion"], "assistant"), with_system)
    elif "prompt" in row:  # prompt (its reference answer is what the model is asked to produce)
        parts = _message_texts(_as_messages(row["prompt"], "user"), with_system)
        if isinstance(row.get("answer"), str):
            parts.append(row["answer"])
    else:
        raise ValueError(f"{row_ref(row)}: not a row of a known view (needs messages, chosen, completion or prompt)")
    return "\n".join(_normalise(part) for part in parts)


def row_ref(row: dict, index: int | None = None) -> str:
    """How a message names a row: its file and 1-based line when known, and its id; else its position."""
    where = f"{row['_source']}:{row['_line']}" if row.get("_source") and row.get("_line") is not None else (
        f"line {row['_line']}" if row.get("_line") is not None else None)
    if row.get("id") is not None:
        return f"id {row['id']}" + (f" ({where})" if where else "")
    if where:
        return where
    return f"row {index}" if index is not None else "row"


# ----------------------------------------------------------------------------------------------
# dedup


def exact_duplicates(rows: Sequence[dict], with_system: bool = False) -> list[int]:
    """Indices of the rows whose content equals an earlier row's (the first of equal rows is kept)."""
    seen: set[str] = set()
    duplicates = []
    for i, row in enumerate(rows):
        text = content_text(row, with_system)
        if text in seen:
            duplicates.append(i)
        else:
            seen.add(text)
    return duplicates


def shingles(text: str, size: int) -> set[str]:
    """The set of word `size`-grams of a text (a text shorter than `size` words is one shingle)."""
    words = text.split()
    if len(words) <= size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; two empty sets are equal (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicates(rows: Sequence[dict], threshold: float, num_perm: int = 128, shingle: int = 5,
                    seed: int = 1, with_system: bool = False) -> list[int]:
    """Indices of the rows that duplicate an earlier kept row: same content, or a Jaccard similarity
    of their word `shingle`-gram sets of at least `threshold`.

    Rows are visited in order; a row is dropped when it matches a row kept before it (so of a chain
    a~b~c where a and c differ, b is dropped and c kept). MinHash LSH (datasketch, `num_perm`
    permutations, seeded: the result is deterministic) only proposes candidates; it is tuned for a
    threshold 0.1 below `threshold` so that few true pairs are missed, and every candidate is
    confirmed with the exact Jaccard similarity of the shingle sets.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"data.near_dup_threshold={threshold}: must be in (0, 1]")
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError as err:
        raise ImportError(NEAR_DEDUP_INSTALL) from err
    lsh = MinHashLSH(threshold=max(0.05, threshold - 0.1), num_perm=num_perm)
    kept_sets: dict[int, set[str]] = {}
    kept_texts: set[str] = set()
    duplicates = []
    for i, row in enumerate(rows):
        text = content_text(row, with_system)
        if text in kept_texts:
            duplicates.append(i)
            continue
        grams = shingles(text, shingle)
        minhash = MinHash(num_perm=num_perm, seed=seed)
        minhash.update_batch([g.encode("utf-8") for g in grams])
        if grams and any(jaccard(grams, kept_sets[j]) >= threshold for j in lsh.query(minhash)):
            duplicates.append(i)
            continue
        kept_texts.add(text)
        kept_sets[i] = grams
        if grams:
            lsh.insert(i, minhash)
    return duplicates


# ----------------------------------------------------------------------------------------------
# contamination


_CHUNK_ROWS = 4096  # training rows whose words are held at once while hashing
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier of the polynomial n-gram hash


def ngram_hashes(word_lists: Sequence[Sequence[str]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """One 64-bit hash per word n-gram window of every word list, and the list each window is from.

    Words are hashed once (Python's string hash: stable within a process, which is all the check
    needs) and combined per window as a polynomial mod 2**64, in numpy, so 50k training rows cost
    seconds and 8 bytes per n-gram (a false match among millions of n-grams is negligible).
    A list shorter than n words has no window.
    """
    lengths = np.array([len(words) for words in word_lists], dtype=np.int64)
    flat = np.fromiter((hash(w) for words in word_lists for w in words), dtype=np.int64,
                       count=int(lengths.sum())).view(np.uint64)
    windows = np.maximum(lengths - n + 1, 0)
    owner = np.repeat(np.arange(len(word_lists)), windows)
    first_window = np.cumsum(windows) - windows
    first_word = np.cumsum(lengths) - lengths
    start = np.arange(int(windows.sum())) - first_window[owner] + first_word[owner]
    grams = np.zeros(len(start), dtype=np.uint64)
    for k in range(n):
        grams = grams * _MIX + flat[start + k]
    return grams, owner


@dataclass
class SplitOverlap:
    """What one eval split shares with the training rows.

    `exact`: (eval row, training row) refs of eval rows whose content equals a training row's.
    `ngram`: (eval row ref, overlap fraction) of the other eval rows whose overlap >= threshold.
    The overlap of a row is the fraction of its word n-gram windows that occur in training; rows
    shorter than n words have none and are checked by exact match only (`short_rows`), so they
    are not part of `mean_overlap`/`max_overlap`.
    """

    rows: int = 0
    short_rows: int = 0
    exact: list[tuple[str, str]] = field(default_factory=list)
    ngram: list[tuple[str, float]] = field(default_factory=list)
    mean_overlap: float = 0.0
    max_overlap: float = 0.0

    @property
    def contaminated(self) -> int:
        return len(self.exact) + len(self.ngram)

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "short_rows": self.short_rows,
            "exact_matches": len(self.exact),
            "ngram_matches": len(self.ngram),
            "mean_overlap": round(self.mean_overlap, 4),
            "max_overlap": round(self.max_overlap, 4),
            "exact": [{"row": e, "train_row": t} for e, t in self.exact],
            "ngram": [{"row": r, "overlap": round(f, 4)} for r, f in self.ngram],
        }


@dataclass
class ContaminationReport:
    """Per eval split, its overlap with the training rows (word `n`-grams, `threshold`)."""

    n: int
    threshold: float
    train_rows: int
    splits: dict[str, SplitOverlap]

    @property
    def failed(self) -> bool:
        """True when any eval row equals a training row or reaches the n-gram threshold."""
        return any(s.contaminated for s in self.splits.values())

    def as_dict(self) -> dict:
        """The data card's `contamination` entry."""
        return {"ngram": self.n, "threshold": self.threshold, "train_rows": self.train_rows,
                "failed": self.failed, "splits": {name: s.as_dict() for name, s in self.splits.items()}}

    def message(self) -> str:
        """One line per contaminated split (count and the first refs), then how to downgrade."""
        lines = []
        for name, s in self.splits.items():
            if s.exact:
                refs = [f"{e} = train {t}" for e, t in s.exact]
                lines.append(f"{name}: {len(s.exact)} of {s.rows} rows equal a training row ({_first(refs)})")
            if s.ngram:
                refs = [f"{r} ({f:.0%})" for r, f in s.ngram]
                lines.append(f"{name}: {len(s.ngram)} of {s.rows} rows share >= {self.threshold:.0%} of their "
                             f"{self.n}-word n-grams with training rows ({_first(refs)})")
        if not lines:
            return (f"no contamination: no {'/'.join(self.splits)} row equals a training row or shares "
                    f">= {self.threshold:.0%} of its {self.n}-word n-grams with training")
        return ("contamination of held-out rows by training rows (user and assistant text):\n  "
                + "\n  ".join(lines) + f"\nto go on anyway set {DOWNGRADE_HINT}")


def _first(refs: list[str]) -> str:
    shown = ", ".join(refs[:SHOWN_REFS])
    return shown + (f", and {len(refs) - SHOWN_REFS} more" if len(refs) > SHOWN_REFS else "")


def _members(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Which `values` occur in the sorted array `sorted_set` (a binary search each)."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def contamination(train_rows: Sequence[dict], eval_rows_by_split: dict[str, Sequence[dict]], n: int,
                  threshold: float) -> ContaminationReport:
    """Check every eval split against the training rows by exact content and word `n`-gram overlap.

    An eval row counts as contaminated when its content equals a training row's, or when at least
    `threshold` of its word n-gram windows occur anywhere in the training rows. Training n-grams are
    hashed (:func:`ngram_hashes`) into one sorted array that eval n-grams are looked up in: 50k
    training rows of 150 words take seconds and 8 bytes per n-gram.
    """
    if n < 1:
        raise ValueError(f"data.contamination_ngram={n}: must be at least 1")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"data.contamination_threshold={threshold}: must be in (0, 1]")
    train_text: dict[str, str] = {}
    chunks, words = [], []
    for i, row in enumerate(train_rows):
        text = content_text(row)
        train_text.setdefault(text, row_ref(row, i))
        words.append(text.split())
        if len(words) == _CHUNK_ROWS or i == len(train_rows) - 1:
            chunks.append(ngram_hashes(words, n)[0])
            words = []
    train_grams = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint64)
    del chunks
    train_grams.sort()  # in place: one copy of the training n-grams at a time
    splits = {}
    for name, rows in eval_rows_by_split.items():
        texts = [content_text(row) for row in rows]
        grams, owner = ngram_hashes([text.split() for text in texts], n)
        found = _members(grams, train_grams)
        windows = np.bincount(owner, minlength=len(rows))
        hits = np.bincount(owner, weights=found, minlength=len(rows))
        overlap = SplitOverlap(rows=len(rows), short_rows=int((windows == 0).sum()))
        fractions = hits[windows > 0] / windows[windows > 0]
        if len(fractions):
            overlap.mean_overlap, overlap.max_overlap = float(fractions.mean()), float(fractions.max())
        for i, (row, text) in enumerate(zip(rows, texts)):
            fraction = hits[i] / windows[i] if windows[i] else None
            if text in train_text:
                overlap.exact.append((row_ref(row, i), train_text[text]))
            elif fraction is not None and fraction >= threshold:
                overlap.ngram.append((row_ref(row, i), float(fraction)))
        splits[name] = overlap
    return ContaminationReport(n=n, threshold=threshold, train_rows=len(train_rows), splits=splits)
