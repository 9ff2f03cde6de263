"""Start-up checks on the rows a run will train on: contamination of the held-out rows."""
from __future__ import annotations

import logging

from llmft.data import quality
from llmft.data.rows import DataSpec, Rows

log = logging.getLogger(__name__)


class ContaminationError(ValueError):
    """Held-out rows overlap the training rows (`data.contamination=fail`, the default)."""


def check_contamination(spec: DataSpec, rows: Rows, held_out: dict[str, list[dict]]) -> dict | None:
    """Compare the validation rows and `held_out` (e.g. the evaluation suite's test rows, in the same
    view) with the training rows, on user and assistant text (`quality.content_text`): exact matches
    and word n-gram overlap (`data.contamination_ngram`, `data.contamination_threshold`).

    Fails the run under `data.contamination=fail`, warns under `warn`; the figures go to the data card.
    """
    if spec.contamination == "off":
        return None
    splits = {"val": rows.val, **held_out}
    report = quality.contamination(rows.train, splits, spec.contamination_ngram, spec.contamination_threshold)
    figures = report.as_dict()
    if report.failed:
        if spec.contamination == "fail":
            raise ContaminationError(report.message())
        log.warning("%s", report.message())
    else:
        log.info("contamination check (%d-grams, threshold %.2f): no held-out row overlaps training",
                 spec.contamination_ngram, spec.contamination_threshold)
    return figures
