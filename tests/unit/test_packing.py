"""Packing without a model: best-fit-decreasing, the packed micro-batch layout, padding fractions."""
from __future__ import annotations

import random

import pytest

from llmft.constants import IGNORE_INDEX
from llmft.data.collate import WindowCollator
from llmft.data.packing import (PackedWindowCollator, balanced_rows, best_fit_decreasing, check_packing,
                                micro_batch_slots, pack_rows, padding_fraction, window_rows)

PAD = 0


def chat(n: int, start: int, prompt: int = 2, meta: str = "") -> dict:
    """A chat example of n tokens start, start+1, ...: the first `prompt` unsupervised, the rest supervised."""
    ids = list(range(start, start + n))
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:], "meta": {"id": meta or str(start)}}


def pair(chosen: int, rejected: int, start: int, ref: float = 0.0) -> dict:
    c, r = chat(chosen, start), chat(rejected, start + 100)
    return {"chosen_input_ids": c["input_ids"], "chosen_labels": c["labels"], "rejected_input_ids": r["input_ids"],
            "rejected_labels": r["labels"], "ref_chosen_logps": ref, "ref_rejected_logps": -ref,
            "meta": {"id": str(start)}}


def test_best_fit_decreasing_puts_each_item_into_the_fullest_bin_that_holds_it():
    # 8 -> bin 0 (room 2); 6 -> bin 1 (room 4); 3 -> bin 1 (room 1); 1 fits both: best fit is bin 1 (room 1),
    # where first-fit would take bin 0
    assert best_fit_decreasing([1, 8, 3, 6], 10) == [[1], [3, 2, 0]]
    assert best_fit_decreasing([5, 5, 5], 10) == [[0, 1], [2]]  # ties keep index order
    with pytest.raises(ValueError, match="11 tokens cannot be packed into rows of 10"):
        best_fit_decreasing([3, 11], 10)


def test_every_item_lands_in_exactly_one_bin_and_no_bin_overflows():
    rng = random.Random(0)
    for _ in range(200):
        capacity = rng.randint(8, 64)
        lengths = [rng.randint(1, capacity) for _ in range(rng.randint(1, 40))]
        bins = best_fit_decreasing(lengths, capacity)
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
        # best fit never leaves two bins that could have been one: any two bins together overflow
        loads = sorted(sum(lengths[i] for i in b) for b in bins)
        assert len(loads) < 2 or loads[0] + loads[1] > capacity


def test_balanced_rows_give_each_item_to_the_emptiest_row():
    # 9 -> row 0; 7 -> row 1; 5 -> row 2; 4 -> row 2 (5 < 7 < 9); 3 -> row 1 (7 < 9): loads 9, 10, 9
    assert balanced_rows([4, 9, 3, 7, 5], 3) == [[1], [3, 2], [4, 0]]
    assert balanced_rows([4, 9], 3) == [[1], [0]]  # empty rows are left out


def test_window_rows_balance_the_rows_within_best_fit_decreasing_s_micro_batches():
    # capacity 10, 2 rows per micro-batch. BFD: rows 8+2, 6+3+1, 5: 2 x 10 + 1 x 5 = 25 slots for 25 tokens,
    # no padding; balanced 3 rows (9, 8, 8) make 26 slots, 4 rows 28: BFD's rows stay
    lengths = [8, 6, 5, 3, 2, 1]
    assert micro_batch_slots([10, 10, 5], 2) == 25
    assert sorted(sum(lengths[i] for i in r) for r in window_rows(lengths, 10, 2)) == [5, 10, 10]
    # 4 units of 3 in rows of 10, 4 rows per micro-batch: BFD makes rows of 9 and 3 (2 x 9 = 18 slots);
    # balanced, 2 rows of 6 make 12 slots (no padding), 3 rows (6, 3, 3) 18, 4 rows of 3 12 again: a tie,
    # which goes to fewer rows
    rows = window_rows([3, 3, 3, 3], 10, 4)
    assert [len(r) for r in rows] == [2, 2]
    # a lone long unit cannot be balanced away: it keeps its own row, the others share one
    rows = window_rows([9, 2, 2, 2], 10, 2)
    assert sorted(sum([9, 2, 2, 2][i] for i in r) for r in rows) == [6, 9]


def test_window_rows_hold_every_unit_once_within_capacity_and_never_take_more_passes_than_bfd():
    rng = random.Random(2)
    for _ in range(200):
        capacity, per_micro = rng.randint(16, 64), rng.randint(1, 8)
        lengths = [rng.randint(1, capacity) for _ in range(rng.randint(1, 40))]
        rows = window_rows(lengths, capacity, per_micro)
        assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
        loads = [sum(lengths[i] for i in r) for r in rows]
        assert max(loads) <= capacity and loads == sorted(loads, reverse=True)
        bfd = [sum(lengths[i] for i in r) for r in best_fit_decreasing(lengths, capacity)]
        assert -(-len(rows) // per_micro) <= -(-len(bfd) // per_micro)
        assert micro_batch_slots(loads, per_micro) <= micro_batch_slots(bfd, per_micro)


def test_packed_chat_row_resets_positions_and_masks_every_document_start():
    a, b = chat(4, 10), chat(3, 20, prompt=0)  # b is supervised from its first token: that label must go
    batch = pack_rows([[a, b], [chat(2, 30)]], "chat", PAD)
    assert batch["input_ids"].tolist() == [[10, 11, 12, 13, 20, 21, 22], [30, 31, PAD, PAD, PAD, PAD, PAD]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2], [0, 1, 0, 1, 2, 3, 4]]
    assert batch["labels"].tolist() == [[-100, -100, 12, 13, -100, 21, 22], [-100] * 7]
    assert batch["attention_mask"].tolist() == [[1] * 7, [1, 1, 0, 0, 0, 0, 0]]
    assert batch["doc_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1], [2, 2, -1, -1, -1, -1, -1]]
    assert [m["id"] for m in batch["meta"]] == ["10", "20", "30"]


def test_packed_pairs_keep_chosen_and_rejected_in_one_row_numbered_chosen_then_rejected():
    p, q = pair(3, 2, 0, ref=1.5), pair(2, 2, 50, ref=-0.5)
    batch = pack_rows([[p], [q]], "pair", PAD)
    # pair 0: chosen = doc 0, rejected = doc 2 (P + 0); pair 1: chosen = doc 1, rejected = doc 3
    assert batch["doc_ids"].tolist() == [[0, 0, 0, 2, 2], [1, 1, 3, 3, -1]]
    assert batch["input_ids"].tolist() == [[0, 1, 2, 100, 101], [50, 51, 150, 151, PAD]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 0]]
    assert batch["ref_chosen_logps"].tolist() == [1.5, -0.5] and batch["ref_rejected_logps"].tolist() == [-1.5, 0.5]
    assert [m["id"] for m in batch["meta"]] == ["0", "50"]


def test_the_packed_window_holds_the_same_tokens_and_supervised_labels_as_unpacked():
    rng = random.Random(1)
    examples = [chat(rng.randint(3, 30), 1000 * i) for i in range(13)]
    micro = PackedWindowCollator(micro_batch_size=2, pad_token_id=PAD, max_length=32, view="chat")(examples)
    assert all(m["input_ids"].shape[0] <= 2 and m["input_ids"].shape[1] <= 32 for m in micro)
    packed_tokens = sorted(t for m in micro for t in m["input_ids"][m["attention_mask"].bool()].tolist())
    assert packed_tokens == sorted(t for e in examples for t in e["input_ids"])
    packed_labels = sorted(t for m in micro for t in m["labels"].flatten().tolist() if t != IGNORE_INDEX)
    assert packed_labels == sorted(t for e in examples for t in e["labels"][1:] if t != IGNORE_INDEX)
    assert sorted(x["id"] for m in micro for x in m["meta"]) == sorted(e["meta"]["id"] for e in examples)


def test_padding_fraction_hand_checked_both_ways():
    examples = [chat(8, 0), chat(2, 10), chat(6, 20), chat(4, 30)]
    # unpacked, micro-batches of 2 in window order: [8, 2] -> 2 x 8 slots, [6, 4] -> 2 x 6; 20 tokens in 28 slots
    unpacked = WindowCollator(2, PAD)(examples)
    assert padding_fraction(unpacked) == pytest.approx(1 - 20 / 28)
    # packed into rows of 10: {8, 2}, {6, 4}: one micro-batch of 2 x 10, no padding
    packed = PackedWindowCollator(2, PAD, 10, "chat")(examples)
    assert len(packed) == 1 and padding_fraction(packed) == 0.0
    # pairs unpacked run as one [2B, max width] batch: chosen 5 and 3, rejected 2 and 2 -> 4 x 5 slots, 12 tokens
    pairs = [pair(5, 2, 0), pair(3, 2, 50)]
    assert padding_fraction(WindowCollator(2, PAD)(pairs)) == pytest.approx(1 - 12 / 20)
    # packed into rows of 2 x 6 = 12: both pairs (7 and 5 tokens) in one row, no padding
    assert padding_fraction(PackedWindowCollator(2, PAD, 6, "pair")(pairs)) == 0.0
    # rows of 2 x 5 = 10: a row each, [2 rows x 7] slots for 12 tokens
    assert padding_fraction(PackedWindowCollator(2, PAD, 5, "pair")(pairs)) == pytest.approx(1 - 12 / 14)


@pytest.mark.parametrize("view, head, named", [("unpaired", None, "method=kto"), ("prompt", None, "ppo/grpo"),
                                               ("pair", "score", "method=reward")])
def test_packing_refuses_methods_it_cannot_serve(view, head, named):
    with pytest.raises(ValueError, match="data.packing=true") as error:
        check_packing(view, head)
    assert named in str(error.value) and "set data.packing=false" in str(error.value)
    check_packing("chat", None)
    check_packing("pair", None)

