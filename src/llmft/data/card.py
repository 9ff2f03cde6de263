"""The data card: what a run read, kept, dropped and checked (`<run>/data_card.json`)."""
from __future__ import annotations

from llmft.data.cache import CacheStats
from llmft.data.rows import DataSpec, Rows
from llmft.run_card import portable_path


def data_card(spec: DataSpec, rows: Rows, examples: dict[str, int], dropped: dict, template_hash: str,
              cache: CacheStats | None, contamination: dict | None, padding: dict | None) -> dict:
    """Sources with their fingerprints and file hashes, rows read per split, what was skipped by design
    and dropped by reason, duplicates removed, the mixture's draw, the contamination figures, the
    tokenisation cache's outcome and the padding fraction."""
    sources = [{**source, "files": {portable_path(path): digest for path, digest in source.get("files", {}).items()}}
               for source in rows.sources]
    duplicates = {split: {reason: n for reason, n in counts.items() if "duplicate" in reason}
                  for split, counts in dropped.items()}
    return {
        "source": spec.source,
        "sources": sources,
        "format": spec.format if spec.source in ("file", "hub") else None,
        "layout": spec.layout,
        "chat_template_sha256": template_hash,
        "max_length": spec.max_length,
        "rows_read": rows.read,
        "examples": examples,
        "skipped": dict(rows.skipped),
        "dropped": {split: dict(counts) for split, counts in dropped.items()},
        "duplicates": duplicates,
        "dedup": spec.dedup,
        "mixture": rows.mixture,
        "contamination": contamination,
        "tokenisation_cache": cache.as_dict() if cache is not None else None,
        "padding_fraction": padding,
    }
