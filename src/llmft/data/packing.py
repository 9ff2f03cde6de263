"""Packing (`data.packing=true`): the examples of one optimizer window packed into rows of `max_length`.

The window is the one `LengthGroupedWindows` picks (the same examples, the same number of optimizer
steps and the same schedule as unpacked); only how it is cut into micro-batches changes.
The window's *units* go into rows: a chat example is a unit of one document; a preference pair is a
unit of two documents, chosen then rejected, kept in the same row. Best-fit-decreasing (each unit,
longest first, into the fullest row it still fits) sets the fewest micro-batches; the rows within
them are then balanced so that little padding is left (`window_rows`). A row holds at most
`max_length` tokens per document of a unit (`max_length` for chat, 2 x `max_length` for pairs: an
unpacked micro-batch of B pairs is 2B rows of at most `max_length`), and a packed micro-batch is
`batch_size` rows, so it never holds more tokens than an unpacked one can.

A packed micro-batch (`PackedWindowCollator`) is one padded tensor per field, [rows, width]:

``input_ids``       the documents of each row back to back, then padding
``labels``          as encoded, and -100 at the first token of every document (the last token of one
                    document never predicts the first of the next) and on padding
``position_ids``    0, 1, ... restarting at every document (and once more for the padding tail): the
                    forward (`llmft.models.forward`) confines attention to each document from these
``attention_mask``  1 on real tokens, 0 on padding. It is *not* given to the model (a 2-D mask would
                    switch transformers' per-document attention off); it counts real tokens
``doc_ids``         the document each token belongs to, -1 on padding. Chat: document k is example k.
                    Pairs: chosen of pair k is document k, rejected is P + k (P pairs), so per-document
                    sums split into chosen [P] then rejected [P], as `concat_pair` orders them
``meta``            one dict per example (per pair), in document order k; other per-example fields
                    (the pair view's cached reference log-probs) become tensors [P] in that order

Validation batches stay unpacked (`ViewDataModule.val_dataloader`).
"""
from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable

import torch

from llmft.constants import IGNORE_INDEX

# The views packing supports, and the documents of each unit (key prefixes, in row order).
DOCUMENTS = {"chat": ("",), "pair": ("chosen_", "rejected_")}
# What the other views are for, to name the method in the start-up error.
UNSUPPORTED = {"unpaired": "kto", "prompt": "ppo/grpo/rloo (online methods: prompts only)"}


def check_packing(view: str, head: str | None) -> None:
    """Fail at start-up when `data.packing=true` meets a method it cannot serve: only the `chat` view
    (SFT) and the `pair` view (DPO family, ORPO, SimPO) are packed; a reward model (`head == "score"`)
    scores each sequence's last token, which packing does not provide."""
    if head == "score":
        raise ValueError("data.packing=true: method=reward (a score head on each sequence's last token) is not "
                         "supported; set data.packing=false")
    if view not in DOCUMENTS:
        method = UNSUPPORTED.get(view, f"with view {view!r}")
        raise ValueError(f"data.packing=true: method={method} (the {view!r} view) is not supported; packing serves "
                         "the chat view (sft) and the pair view (dpo, ipo, hinge, orpo, simpo); set data.packing=false")


def unit_capacity(view: str, max_length: int) -> int:
    """Tokens a packed row holds: `max_length` per document of a unit, so no unit is ever too long."""
    return max_length * len(DOCUMENTS[view])


def unit_length(example: dict, view: str) -> int:
    return sum(len(example[prefix + "input_ids"]) for prefix in DOCUMENTS[view])


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` in bins of at most `capacity`: longest first, each into the bin with the least
    room left that still holds it (a new bin when none does). Ties keep index order, so the result is a
    pure function of the input. Bins are in order of opening; each lists its items longest first."""
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin), sorted: the best fit is the first with enough room
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[i] > capacity:
            raise ValueError(f"an example of {lengths[i]} tokens cannot be packed into rows of {capacity} "
                             "(data.max_length): the encoders truncate, so this is a bug")
        at = bisect.bisect_left(free, (lengths[i], -1))
        if at < len(free):
            room, b = free.pop(at)
        else:
            room, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        bisect.insort(free, (room - lengths[i], b))
    return bins


def balanced_rows(lengths: list[int], rows: int) -> list[list[int]]:
    """Indices of `lengths` in at most `rows` rows of even load: longest first, each into the row holding
    the fewest tokens so far (LPT, the classic makespan heuristic). Empty rows are left out."""
    heap = [(0, r) for r in range(rows)]
    out: list[list[int]] = [[] for _ in range(rows)]
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        load, r = heapq.heappop(heap)
        out[r].append(i)
        heapq.heappush(heap, (load + lengths[i], r))
    return [row for row in out if row]


def micro_batch_slots(loads: list[int], rows_per_micro: int) -> int:
    """Token slots of rows with these loads, fullest first, cut into micro-batches of `rows_per_micro`
    rows, each as wide as its fullest row."""
    loads = sorted(loads, reverse=True)
    return sum(len(loads[i : i + rows_per_micro]) * loads[i] for i in range(0, len(loads), rows_per_micro))


def window_rows(lengths: list[int], capacity: int, rows_per_micro: int) -> list[list[int]]:
    """The rows a window's units are packed into, fullest first.

    Best-fit-decreasing into rows of `capacity` gives the fewest rows, and so the fewest micro-batches
    (forward passes). Its rows are uneven, though (the last ones nearly empty), and a micro-batch is as
    wide as its fullest row: on length-grouped windows of the bundled suite BFD rows alone were 15%
    padding where unpacked micro-batches were 4%. So within BFD's number of micro-batches, every row
    count is tried with rows balanced by `balanced_rows`, and the layout with the fewest slots
    (`micro_batch_slots`) that keeps every row within `capacity` wins (BFD's own rows when none does
    better). Ties go to fewer rows.
    """
    def load(row: list[int]) -> int:
        return sum(lengths[i] for i in row)

    best = best_fit_decreasing(lengths, capacity)
    best_slots = micro_batch_slots([load(r) for r in best], rows_per_micro)
    micro_batches = -(-len(best) // rows_per_micro)
    fewest = max(-(-sum(lengths) // capacity), (micro_batches - 1) * rows_per_micro + 1)
    for rows in range(fewest, min(micro_batches * rows_per_micro, len(lengths)) + 1):
        candidate = balanced_rows(lengths, rows)
        loads = [load(r) for r in candidate]
        slots = micro_batch_slots(loads, rows_per_micro)
        if max(loads) <= capacity and slots < best_slots:
            best, best_slots = candidate, slots
    return sorted(best, key=lambda r: -load(r))  # stable: rows of equal load keep their order


def pack_rows(rows: list[list[dict]], view: str, pad_token_id: int) -> dict:
    """One packed micro-batch (layout in the module docstring) from rows, each a list of examples."""
    prefixes = DOCUMENTS[view]
    units = [example for row in rows for example in row]
    n_units = len(units)
    width = max(sum(unit_length(example, view) for example in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    doc_ids = torch.full(shape, -1, dtype=torch.long)
    unit = 0
    for r, row in enumerate(rows):
        at = 0
        for example in row:
            for side, prefix in enumerate(prefixes):
                ids, labs = example[prefix + "input_ids"], example[prefix + "labels"]
                end = at + len(ids)
                input_ids[r, at:end] = torch.tensor(ids)
                labels[r, at:end] = torch.tensor(labs)
                labels[r, at] = IGNORE_INDEX  # no prediction across a document boundary
                position_ids[r, at:end] = torch.arange(len(ids))
                attention_mask[r, at:end] = 1
                doc_ids[r, at:end] = side * n_units + unit
                at = end
            unit += 1
        position_ids[r, at:] = torch.arange(width - at)  # the padding tail: a document of its own
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "attention_mask": attention_mask,
             "doc_ids": doc_ids, "meta": [example.get("meta", {}) for example in units]}
    token_keys = {prefix + key for prefix in prefixes for key in ("input_ids", "labels")}
    for key in units[0]:
        if key != "meta" and key not in token_keys:
            batch[key] = torch.tensor([example[key] for example in units])
    return batch


class PackedWindowCollator:
    """The packed counterpart of `WindowCollator`: one window (an optimizer step's examples) -> rows of
    at most `unit_capacity(view, max_length)` tokens (`window_rows`) -> micro-batches of
    `micro_batch_size` rows, fullest rows first, so rows of one micro-batch have similar widths."""

    def __init__(self, micro_batch_size: int, pad_token_id: int, max_length: int, view: str):
        check_packing(view, None)
        self.micro_batch_size = micro_batch_size
        self.pad_token_id = pad_token_id
        self.capacity = unit_capacity(view, max_length)
        self.view = view

    def rows(self, examples: list[dict]) -> list[list[dict]]:
        rows = window_rows([unit_length(e, self.view) for e in examples], self.capacity, self.micro_batch_size)
        return [[examples[i] for i in row] for row in rows]

    def __call__(self, examples: list[dict]) -> list[dict]:
        rows = self.rows(examples)
        size = self.micro_batch_size
        return [pack_rows(rows[i : i + size], self.view, self.pad_token_id) for i in range(0, len(rows), size)]


def forward_slots(micro: dict, padding_free: bool = False) -> tuple[int, int]:
    """(real tokens, token slots) of the tensors the forward pass computes over for one micro-batch.
    An unpacked pair micro-batch runs as one [2B, max(chosen, rejected width)] batch (`concat_pair`);
    a packed one under a padding-free model (`models.forward.runs_padding_free`) as its real tokens only;
    every other layout runs each `*attention_mask`-sized tensor as it is."""
    masks = {key: value for key, value in micro.items() if key.endswith("attention_mask")}
    real = sum(int(mask.sum()) for mask in masks.values())
    if padding_free and "position_ids" in micro:
        return real, real
    if "chosen_attention_mask" in masks and "position_ids" not in micro:
        chosen, rejected = masks["chosen_attention_mask"], masks["rejected_attention_mask"]
        return real, 2 * chosen.shape[0] * max(chosen.shape[1], rejected.shape[1])
    return real, sum(mask.numel() for mask in masks.values())


def padding_fraction(micro_batches: Iterable[dict], padding_free: bool = False) -> float:
    """Slots of the padded micro-batches that hold no real token, as a fraction of all slots."""
    real = slots = 0
    for micro in micro_batches:
        r, s = forward_slots(micro, padding_free)
        real, slots = real + r, slots + s
    return 1.0 - real / slots if slots else 0.0
