"""Padding, optimizer-step windows, length grouping."""
from __future__ import annotations

import torch

from llmft.data.collate import LengthGroupedWindows, WindowCollator, pad_batch
from llmft.methods.schedules import warmup_cosine
from llmft.metrics.exact_match import exact_match_by_task


def test_pad_batch_pads_right_with_ignored_labels():
    batch = pad_batch([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}], 0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_window_collator_splits_into_micro_batches():
    examples = [{"input_ids": [1] * n, "labels": [1] * n} for n in (3, 2, 5, 1, 4)]
    window = WindowCollator(micro_batch_size=2, pad_token_id=0)(examples)
    assert [m["input_ids"].shape for m in window] == [(2, 3), (2, 5), (1, 4)]


def test_length_grouped_windows_cover_every_example_once_and_are_seeded():
    lengths = [int(x) for x in torch.randint(1, 200, (101,), generator=torch.Generator().manual_seed(0))]
    sampler = LengthGroupedWindows(lengths, window_size=8, seed=3, group_windows=4)
    first = list(sampler)
    assert sorted(i for w in first for i in w) == list(range(101))
    assert len(first) == len(sampler) == 13
    assert first == LengthGroupedWindows(lengths, 8, seed=3, group_windows=4).windows(0)
    assert list(sampler) == first  # iterating is pure: the epoch changes only through set_epoch
    sampler.set_epoch(1)
    assert list(sampler) != first and list(sampler) == sampler.windows(1)  # the next epoch is reshuffled
    # grouping by length: the padding inside windows is much smaller than with a plain shuffle
    def padded(windows):
        return sum(max(lengths[i] for i in w) * len(w) for w in windows)

    plain = [list(range(i, min(i + 8, 101))) for i in range(0, 101, 8)]
    assert padded(first) < 0.85 * padded(plain)


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_ratio=0.2, min_lr_ratio=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 1 / 3 and lrs[1] == 2 / 3 and lrs[2] == 1.0
    assert abs(lrs[-1] - (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 7 / 8)).item()))) < 1e-6
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_exact_match_by_task():
    report = exact_match_by_task(["a", "a", "b", "b", "b"], [True, False, True, True, False])
    assert report == {"overall": 3 / 5, "a": 0.5, "b": 2 / 3}


def test_validation_batches_never_leave_a_kto_row_alone():
    from llmft.data.datamodule import val_batches

    assert val_batches(17, 8) == [list(range(8)), list(range(8, 16)), [16]]
    assert val_batches(17, 8, min_size=2) == [list(range(8)), list(range(8, 17))]
    assert val_batches(16, 8, min_size=2) == [list(range(8)), list(range(8, 16))]
    assert val_batches(1, 8, min_size=2) == [[0]]  # nothing to join: with_mismatched_pairs refuses it
