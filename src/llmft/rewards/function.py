"""A user's reward function, named by its import path: fn(completions, meta) -> list[float]."""
from __future__ import annotations

from hydra.utils import get_method


class FunctionReward:
    name = "function"

    def __init__(self, fn: str):
        try:
            self.fn = get_method(fn)
        except Exception as err:  # hydra wraps the import error; say which option named it
            raise ValueError(f"reward.fn={fn}: cannot import it ({err})") from None
        self.path = fn

    def __call__(self, completions: list[str], meta: list[dict]) -> list[float]:
        scores = [float(s) for s in self.fn(completions, meta)]
        if len(scores) != len(completions):
            raise ValueError(f"reward.fn={self.path} returned {len(scores)} scores for {len(completions)} responses")
        return scores

    def check_rows(self, rows: list[dict], where: str) -> None:
        """A user function decides for itself what it needs."""
