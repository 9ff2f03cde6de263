"""Fixtures of the task-suite tests: every split's chat rows and their views, generated once."""
from __future__ import annotations

import pytest

from llmft.data import tasks
from llmft.data.tasks import SPLITS


@pytest.fixture(scope="module")
def chat() -> dict[str, list[dict]]:
    return {split: tasks.generate(split) for split in SPLITS}


@pytest.fixture(scope="module")
def all_views(chat) -> dict[str, dict[str, list[dict]]]:
    return {split: tasks.views(chat[split]) for split in SPLITS}
