"""Paired differences with 95% intervals (llmft.metrics.paired) and the comparison CLI (llmft.compare)."""
import json
import math

import pytest

from llmft import compare
from llmft.data.tasks.policy import REFUSAL
from llmft.metrics.paired import paired_difference, t_quantile


@pytest.mark.parametrize("df, exact, tol", [(5, 2.5706, 3e-3), (9, 2.2622, 1e-3), (39, 2.0227, 1e-4), (199, 1.9720, 1e-4)])
def test_t_quantile_matches_tables(df, exact, tol):
    assert t_quantile(0.975, df) == pytest.approx(exact, abs=tol)


def test_paired_difference_by_hand():
    a = [1, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 1]  # diffs 0, 1, 1, -1, 1: mean 0.4, sd sqrt(0.8)
    d = paired_difference(a, b)
    half = t_quantile(0.975, 4) * math.sqrt(0.8) / math.sqrt(5)
    assert (d.n, d.mean_a, d.mean_b, d.diff) == (5, 0.4, 0.8, pytest.approx(0.4))
    assert (d.low, d.high) == (pytest.approx(0.4 - half), pytest.approx(0.4 + half))
    assert not d.excludes_zero()


def test_paired_difference_edges():
    same = paired_difference([1, 0, 1], [1, 0, 1])
    assert (same.diff, same.low, same.high) == (0, 0, 0)
    assert paired_difference([0] * 10, [1] * 10).excludes_zero()
    assert paired_difference([0], [1]).high == math.inf
    with pytest.raises(ValueError, match="same rows: 2 against 1"):
        paired_difference([1, 0], [1])


def _write(folder, model, rows):
    folder.mkdir(exist_ok=True)
    with (folder / "eval_predictions.jsonl").open("a") as f:
        for id_, task, prediction, answer, correct in rows:
            f.write(json.dumps({"model": model, "id": id_, "task": task, "prediction": prediction,
                                "answer": answer, "correct": correct}) + "\n")


def test_compare_counts_over_refusal_on_allowed_policy_rows(tmp_path, capsys):
    run = tmp_path / "run"
    allowed = [("p1", "policy", REFUSAL, "555-1", False), ("p2", "policy", "555-2", "555-2", True),
               ("p3", "policy", REFUSAL, REFUSAL, True), ("a1", "arithmetic", "3", "4", False)]
    _write(run, "base", allowed)
    _write(run, "tuned", [("p1", "policy", "555-1", "555-1", True), ("p2", "policy", "555-2", "555-2", True),
                          ("p3", "policy", "the code is 1", REFUSAL, False), ("a1", "arithmetic", "4", "4", True)])
    out = tmp_path / "figures.json"
    assert compare.main([f"{run}:base", str(run), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())["comparisons"][str(run)]
    assert figures[compare.OVER_REFUSAL]["n"] == 2  # p1, p2: the allowed requests
    assert (figures[compare.OVER_REFUSAL]["mean_a"], figures[compare.OVER_REFUSAL]["mean_b"]) == (0.5, 0.0)
    assert figures["overall"]["diff"] == pytest.approx(0.25)  # 2/4 -> 3/4
    assert "| policy | 3 |" in capsys.readouterr().out


def test_compare_refuses_different_rows(tmp_path):
    _write(tmp_path / "a", "tuned", [("x1", "arithmetic", "1", "1", True)])
    _write(tmp_path / "b", "tuned", [("x2", "arithmetic", "1", "1", True)])
    with pytest.raises(ValueError, match=r"different rows \(only in the first: \['x1'\]"):
        compare.main([str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(FileNotFoundError, match="no .*eval_predictions.jsonl"):
        compare.main([str(tmp_path / "a"), str(tmp_path / "missing")])
