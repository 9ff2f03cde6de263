"""`method.precompute_ref=true`: the reference log-probs of every example, computed once and cached.

The cache key is a hash of everything the values depend on: the base weights (their SHA-256), the
runs merged into it (`init_from` lineage: the adapter or model files' hashes), how the model is
loaded (PEFT kind, quantization, precision), the method (its class) and the encoded examples' token
ids and labels (which cover the data, the chat template, the tokenizer and `data.max_length`). A
sweep over lr, rank or beta therefore reuses the values; anything else computes them again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from llmft.data.collate import pad_batch
from llmft.models import embedded
from llmft.models.provenance import weights_sha256

log = logging.getLogger(__name__)


def cache_folder(configured: str | None) -> Path:
    return Path(configured).expanduser() if configured else embedded.cache_root() / "reference_logps"


def cache_key(method, handle, lineage: list[Path], load_settings: dict, splits: dict[str, list[dict]]) -> str:
    examples = hashlib.sha256()
    for name, split in splits.items():
        examples.update(name.encode())
        for example in split:
            examples.update(json.dumps({k: v for k, v in example.items() if k != "meta"}, sort_keys=True).encode())
    parts = {
        "base": handle.base.weights_sha256 or handle.base.id,
        "lineage": [weights_sha256(p) for p in lineage],
        "load": load_settings,
        "method": f"{type(method).__module__}.{type(method).__qualname__}",
        "examples": examples.hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def attach(method, handle, splits: dict[str, list[dict]], key: str, folder: Path, batch_size: int,
           device: torch.device, autocast_dtype: torch.dtype | None = None) -> bool:
    """Give every example its reference values (`method.REFERENCE_FIELDS`), from the cache or computed
    now (then saved). Returns True on a cache hit."""
    path = folder / f"{key}.pt"
    if path.is_file():
        values = torch.load(path)
        log.info("reference log-probs: cache hit %s (no reference forward pass)", path)
        hit = True
    else:
        n = sum(len(s) for s in splits.values())
        log.info("reference log-probs: cache miss, computing them for %d examples once (%s)", n, path)
        handle.place(device)
        pad = handle.tokenizer.pad_token_id
        values = {}
        for name, examples in splits.items():
            chunks = []
            for i in tqdm(range(0, len(examples), batch_size), desc=f"reference log-probs ({name})", unit="batch"):
                batch = {k: v.to(device) for k, v in pad_batch(examples[i: i + batch_size], pad).items()
                         if isinstance(v, torch.Tensor)}
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    computed = method.reference_values(batch)
                chunks.append(torch.stack([v.float().cpu() for v in computed.values()], 1))
            values[name] = torch.cat(chunks) if chunks else torch.zeros(0, len(method.REFERENCE_FIELDS))
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        torch.save(values, tmp)
        os.replace(tmp, path)
        hit = False
    for name, examples in splits.items():
        for example, row in zip(examples, values[name].tolist()):
            example.update(zip(method.REFERENCE_FIELDS, row))
    return hit
