"""How encoded examples reach the method: windows of micro-batches for training, batches for validation."""
from __future__ import annotations

import logging
from collections import Counter
from functools import partial

import lightning as L
import torch
from torch.utils.data import DataLoader

from llmft.data.collate import LengthGroupedWindows, WindowCollator, WindowDataset, pad_batch, with_mismatched_pairs
from llmft.data.encoders import ENCODERS, encode_rows, example_length
from llmft.data.cache import TokenCache
from llmft.data.packing import DOCUMENTS, PackedWindowCollator, check_packing, padding_fraction
from llmft.data.rows import DataSpec, Rows  # noqa: F401  DataSpec: runs before issue 9 name llmft.data.datamodule.DataSpec
from llmft.data.templates import ChatRenderer

log = logging.getLogger(__name__)


PADDING_WINDOWS = 256  # windows the run card's padding fractions are measured on (collating 50k rows twice took 13 s)


class ViewDataModule(L.LightningDataModule):
    """Rows of one view -> examples -> windows of micro-batches (one window per optimizer step) and
    validation batches. Any view: the collator pads every prefixed group of token lists.

    `packing` (chat and pair views): each training window's examples are packed into rows of
    `renderer.max_length` tokens per document of an example (`llmft.data.packing`); the windows, and so
    the optimizer steps and the schedule, are those of the unpacked run. Validation stays unpacked.
    """

    def __init__(
        self,
        rows: Rows,
        renderer: ChatRenderer,
        batch_size: int,
        accumulate_grad_batches: int,
        seed: int,
        num_workers: int = 0,
        view: str = "chat",
        cache: TokenCache | None = None,
        max_dropped_fraction: float = 1.0,
        packing: bool = False,
    ):
        super().__init__()
        if packing:
            check_packing(view, None)
        self.packing = packing
        self.cache = cache  # the tokenisation cache (`data.cache_dir`); None encodes every run
        self.max_dropped_fraction = max_dropped_fraction
        if view not in ENCODERS:
            raise ValueError(f"view {view!r}: choose one of {sorted(ENCODERS)}")
        self.view = view
        if accumulate_grad_batches < 1:
            raise ValueError(f"trainer.accumulate_grad_batches={accumulate_grad_batches}: must be at least 1")
        self.rows = rows
        self.renderer = renderer
        self.batch_size = batch_size
        self.accumulate_grad_batches = accumulate_grad_batches
        self.seed = seed
        self.num_workers = num_workers
        self.train_examples: list[dict] = []
        self.val_examples: list[dict] = []
        self.dropped: dict[str, Counter] = {}
        self._resume_position: dict[str, int] | None = None

    # -- the position in the epoch, saved in resume checkpoints (written at an optimizer-step boundary) --
    def state_dict(self) -> dict[str, int]:
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "windows_done": progress.processed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume_position = dict(state_dict)

    def setup(self, stage: str | None = None) -> None:
        if self.train_examples:
            return
        encode = self.cache.encode_rows if self.cache is not None else encode_rows
        self.train_examples, train_dropped = encode(self.rows.train, self.renderer, self.view)
        self.val_examples, val_dropped = encode(self.rows.val, self.renderer, self.view)
        self.dropped = {"train": self.rows.dropped["train"] + train_dropped, "val": self.rows.dropped["val"] + val_dropped}
        for reason, n in self.rows.skipped.items():
            log.info("skipped %d rows this method's view does not use: %s", n, reason)
        for split, counts in self.dropped.items():
            for reason, n in counts.items():
                log.warning("dropped %d %s rows: %s", n, split, reason)
        for split, encoded in (("train", train_dropped), ("val", val_dropped)):
            check_dropped_fraction(split, self.rows.dropped[split], self.rows.converted.get(split, 0), encoded,
                                   len(getattr(self.rows, split)), self.max_dropped_fraction)
        if not self.train_examples:
            raise ValueError(f"no training example left after dropping: {dict(self.dropped['train'])}")
        if self.view == "unpaired" and self.window_size < 2:
            raise ValueError(f"data.batch_size x trainer.accumulate_grad_batches = {self.window_size}: method=kto pairs "
                             "each row's prompt with another row's completion of the same step (its KL reference "
                             "point), so a step needs at least 2 rows")
        if self.view == "unpaired" and len({e["desirable"] for e in self.train_examples}) < 2:
            only = "true" if self.train_examples[0]["desirable"] else "false"
            raise ValueError(f"the training rows all have label={only}: method=kto needs desirable (label true) "
                             "and undesirable (label false) rows")
        log.info("data: %d train / %d val examples", len(self.train_examples), len(self.val_examples))

    @property
    def window_size(self) -> int:
        """Examples per optimizer step: batch_size x accumulate_grad_batches."""
        return self.batch_size * self.accumulate_grad_batches

    @property
    def min_window(self) -> int:
        """The fewest examples a training window may hold: a shorter last window of a chunk joins the one
        before it. KTO needs 2 rows (mismatched pairs); an online method a whole rollout (its optimizer
        steps split the rollout's responses, so every prompt is used and no minibatch is empty)."""
        return {"unpaired": 2, "prompt": self.window_size}.get(self.view, 1)

    @property
    def group_windows(self) -> int:
        """Windows whose examples are sorted by length together (`LengthGroupedWindows`). An online
        method's window is one rollout: grouped by length, a rollout held the prompts of one task (the
        tasks' prompts differ in length) and its update pushed the policy towards one task at a time;
        ungrouped (1), every rollout mixes the tasks as the data does."""
        return 1 if self.view == "prompt" else 16

    @property
    def windows_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""
        return len(self.windows())

    @property
    def pad_token_id(self) -> int:
        return self.renderer.tokenizer.pad_token_id

    def windows(self) -> LengthGroupedWindows:
        return LengthGroupedWindows([example_length(e) for e in self.train_examples], self.window_size, self.seed,
                                    group_windows=self.group_windows, min_size=self.min_window)

    def train_dataloader(self) -> DataLoader:
        windows = self.windows()
        if self._resume_position is not None:  # a resumed run: the loader Lightning builds after restoring
            windows.resume_at(self._resume_position["epoch"], self._resume_position["windows_done"])
            self._resume_position = None
        # batch_size=None: each sampled index is a whole window, which Lightning re-seeds per epoch
        return DataLoader(
            WindowDataset(self.train_examples),
            sampler=windows,
            batch_size=None,
            generator=own_generator(self.seed),
            collate_fn=self.window_collator(packed=self.packing),
            num_workers=self.num_workers,
        )

    def window_collator(self, packed: bool) -> WindowCollator | PackedWindowCollator:
        if packed:
            return PackedWindowCollator(self.batch_size, self.pad_token_id, self.renderer.max_length, self.view)
        return WindowCollator(self.batch_size, self.pad_token_id, mismatched_pairs=self.view == "unpaired")

    def padding_fractions(self, padding_free: bool = False) -> dict[str, float | None]:
        """Padding of the training micro-batches over epoch 0's first `PADDING_WINDOWS` windows (all of
        them for most runs), unpacked and packed (None for a view that is not packed): slots the forward
        computes that hold no real token / all its slots (`llmft.data.packing.padding_fraction`).
        `padding_free`: the model runs packed rows as their real tokens only (0 padding packed).
        `training` names the layout this run trains with."""
        windows = self.windows().windows(0)[:PADDING_WINDOWS]
        return {"unpacked": self._padding(windows, packed=False),
                "packed": self._padding(windows, True, padding_free) if self.view in DOCUMENTS else None,
                "training": "packed" if self.packing else "unpacked"}

    def _padding(self, windows: list[list[int]], packed: bool, padding_free: bool = False) -> float:
        collate = self.window_collator(packed)
        micro_batches = (micro for window in windows for micro in collate([self.train_examples[i] for i in window]))
        return round(padding_fraction(micro_batches, padding_free), 4)

    def val_dataloader(self) -> DataLoader:
        min_size = 2 if self.view == "unpaired" else 1
        return DataLoader(
            self.val_examples,
            batch_sampler=val_batches(len(self.val_examples), self.batch_size, min_size),
            generator=own_generator(self.seed),
            collate_fn=partial(pad_val_batch, pad_token_id=self.pad_token_id, mismatched_pairs=self.view == "unpaired"),
            num_workers=self.num_workers,
        )


def check_dropped_fraction(split: str, before: Counter, rows: int, encoding: Counter, encoded: int,
                           limit: float) -> None:
    """Stop when a split lost more than `data.max_dropped_fraction` of its rows, naming the counts.

    `before`: dropped of the split's `rows` (duplicates); `encoding`: dropped of the `encoded` rows
    (truncation). The fraction lost is 1 - (kept before) x (kept encoding), which stays right when
    `data.limit_train` samples the rows in between.
    """
    lost_before = sum(before.values()) / rows if rows else 0.0
    lost_encoding = sum(encoding.values()) / encoded if encoded else 0.0
    fraction = 1.0 - (1.0 - lost_before) * (1.0 - lost_encoding)
    if fraction > limit:
        reasons = "; ".join(f"{n} {reason}" for reason, n in (before + encoding).most_common())
        raise ValueError(f"data: {fraction:.1%} of the {split} rows dropped, more than data.max_dropped_fraction="
                         f"{limit} ({reasons}; of {rows} rows). Fix the data, or raise data.max_dropped_fraction "
                         "to train on what is left")


def own_generator(seed: int) -> torch.Generator:
    """A loader's own generator: every new iterator (each epoch, each validation) draws a base seed from
    it, and without one that draw comes from the global RNG, which training's sampling uses too; a run
    resumed at an epoch boundary would then see other random numbers than the uninterrupted one."""
    return torch.Generator().manual_seed(seed)


def val_batches(n: int, batch_size: int, min_size: int = 1) -> list[list[int]]:
    """Consecutive batches of `batch_size` indices; a last batch under `min_size` rows joins the one
    before it (KTO pairs each row with another row's completion, so it needs two)."""
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < min_size:
        last = batches.pop()
        batches[-1] += last
    return batches


def pad_val_batch(examples: list[dict], pad_token_id: int, mismatched_pairs: bool) -> dict:
    if mismatched_pairs:
        examples = with_mismatched_pairs(examples)
    return pad_batch(examples, pad_token_id)
