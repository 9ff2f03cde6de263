"""Batching: right-padded micro-batches, grouped into optimizer-step windows."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from llmft.constants import IGNORE_INDEX


def pad_batch(examples: list[dict], pad_token_id: int) -> dict:
    """Right-pad every group of token lists of the examples to its longest member.

    `<prefix>input_ids` are padded with the pad token and get a `<prefix>attention_mask`;
    `<prefix>labels` are padded with -100 (see `data.encoders` for the prefixes of each view).
    Scalar fields become a tensor; `meta` is passed through as a list of dicts.
    """
    batch: dict = {}
    for key in examples[0]:
        values = [example[key] for example in examples]
        if key == "meta":
            batch[key] = values
        elif isinstance(values[0], list):
            fill = IGNORE_INDEX if key.endswith("labels") else pad_token_id
            batch[key] = _pad([torch.tensor(v, dtype=torch.long) for v in values], fill)
            if key.endswith("input_ids"):
                mask = [torch.ones(len(v), dtype=torch.long) for v in values]
                batch[key.removesuffix("input_ids") + "attention_mask"] = _pad(mask, 0)
        else:
            batch[key] = torch.tensor(values)
    return batch


def _pad(rows: list[torch.Tensor], fill: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), fill, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


class LengthGroupedWindows(Sampler[list[int]]):
    """Yields the example indices of one optimizer-step window at a time, with little padding.

    Each epoch: a seeded shuffle, then chunks of `group_windows` windows are sorted by length and
    cut into windows, and the windows are shuffled again (HF's `group_by_length`, per window).
    Examples of similar length share micro-batches, so padding costs little compute.

    The order is a pure function of (seed, epoch): iterating never changes the epoch, `set_epoch`
    does. Lightning calls `set_epoch` on a DataLoader's `sampler` (not on a `batch_sampler`) before
    every epoch, so the training loader uses this class as its *sampler* over `WindowDataset`
    (each index it yields is a whole window), and a resumed run that sets the epoch gets the same
    windows again.
    """

    def __init__(self, lengths: list[int], window_size: int, seed: int, group_windows: int = 16, min_size: int = 1):
        if len(lengths) < min_size:
            raise ValueError(f"{len(lengths)} examples cannot fill a window of at least {min_size}")
        self.lengths = lengths
        self.window_size = window_size
        self.seed = seed
        self.group_windows = group_windows
        self.min_size = min_size  # a shorter last window of a chunk joins the window before it
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, done: int) -> None:
        """Start inside `epoch`, after its first `done` windows. The epoch is set here too: on resume,
        Lightning draws the first iterator before it calls `set_epoch`. A checkpoint taken after an
        epoch's last window resumes at the start of the next epoch."""
        if done >= len(self):
            epoch, done = epoch + 1, 0
        self.epoch = epoch
        self._resume = (epoch, done)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def windows(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        chunk = self.window_size * self.group_windows
        windows = []
        for start in range(0, len(order), chunk):
            group = sorted(order[start : start + chunk], key=lambda i: self.lengths[i], reverse=True)
            cut = [group[i : i + self.window_size] for i in range(0, len(group), self.window_size)]
            if len(cut) > 1 and len(cut[-1]) < self.min_size:
                last = cut.pop()
                cut[-1] = cut[-1] + last
            windows += cut
        shuffled = torch.randperm(len(windows), generator=generator).tolist()
        return [windows[i] for i in shuffled]

    def __iter__(self) -> Iterator[list[int]]:
        windows = self.windows(self.epoch)
        if self._resume is not None and self._resume[0] == self.epoch:
            windows = windows[self._resume[1]:]
            self._resume = None
        return iter(windows)

    def __len__(self) -> int:
        return len(self.windows(0))  # the count is the same every epoch


class WindowDataset(Dataset):
    """Examples indexed by a whole window (a list of indices), for a loader sampled by windows."""

    def __init__(self, examples: list[dict]):
        self.examples = examples

    def __getitem__(self, window: list[int]) -> list[dict]:
        return [self.examples[i] for i in window]

    def __len__(self) -> int:
        return len(self.examples)


class WindowCollator:
    """Collates the examples of one optimizer step into `micro_batch_size`-sized padded micro-batches.

    The training loader yields one window (batch_size x accumulate_grad_batches examples) per
    optimizer step, so the method sees the whole window and can normalise the loss by the number of
    supervised tokens in all of it: batch 8 x accumulation 1 then equals batch 1 x accumulation 8.
    """

    def __init__(self, micro_batch_size: int, pad_token_id: int, mismatched_pairs: bool = False):
        self.micro_batch_size = micro_batch_size
        self.pad_token_id = pad_token_id
        self.mismatched_pairs = mismatched_pairs

    def __call__(self, examples: list[dict]) -> list[dict[str, torch.Tensor]]:
        if self.mismatched_pairs:
            examples = with_mismatched_pairs(examples)
        size = self.micro_batch_size
        return [pad_batch(examples[i : i + size], self.pad_token_id) for i in range(0, len(examples), size)]


def with_mismatched_pairs(examples: list[dict]) -> list[dict]:
    """Add `kl_input_ids` / `kl_labels` to unpaired examples: example i's prompt followed by the
    completion of example i+1 of the same window (KTO's estimate of KL(policy || reference) uses
    such mismatched pairs, as TRL does). A window of one row has no other completion: an error."""
    if len(examples) < 2:
        raise ValueError("method=kto needs at least 2 rows per optimizer step (and in the validation split) to pair "
                         "prompts with other rows' completions (its KL reference point): raise data.batch_size x "
                         "trainer.accumulate_grad_batches")
    paired = []
    for i, example in enumerate(examples):
        other = examples[(i + 1) % len(examples)]
        cut, other_cut = example["prompt_length"], other["prompt_length"]
        paired.append({**example,
                       "kl_input_ids": example["input_ids"][:cut] + other["input_ids"][other_cut:],
                       "kl_labels": [IGNORE_INDEX] * cut + other["labels"][other_cut:]})
    return paired
