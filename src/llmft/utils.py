"""Small helpers shared by the orchestration modules (standard library only)."""
from __future__ import annotations

import csv
import io
import json
import os
import secrets
from pathlib import Path
from collections.abc import Callable
from typing import Any


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`: readers never
    see half a file, and a failed write leaves `path` as it was and no temporary file behind.

    The temporary file (`.{name}.{pid}.{random}.tmp`) is opened with mode "xb", so it gets the
    ordinary mode (0666 less the umask, like any `open`), not mkstemp's 0600, and an existing
    file is never clobbered (then it is not ours to remove either).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    handle = open(tmp, "xb")
    try:
        with handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON (indented, UTF-8, newline-terminated) atomically with `write_bytes_atomic`:
    readers never see half a file.

    The file gets the ordinary mode (0666 less the umask, like any `open`), not mkstemp's 0600.
    """
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def keep_csv_rows(path: str | Path, keep: Callable[[dict], bool]) -> int:
    """Rewrite the CSV file at `path` (atomically) with only the rows `keep` accepts; returns how many
    rows it dropped (the file is left untouched when none)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames or [], list(reader)
    kept = [r for r in rows if keep(r)]
    if len(kept) < len(rows):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
        write_bytes_atomic(path, text.getvalue().encode("utf-8"))
    return len(rows) - len(kept)
