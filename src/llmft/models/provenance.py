"""Which base model a run trained on, named portably and pinned by a hash of its weights.

A saved adapter names its base in `adapter_config.json`. transformers fills that in with the folder
the base was loaded from, which for the embedded model is this machine's cache folder: an absolute
path that does not exist anywhere else. llmft names the base by a portable id instead (the
embedded name `llmft:<name>`, a Hub id, or the path exactly as the user gave it), records the exact
variant (the embedded SmolLM2 is the Q4_1 GGUF, dequantised: not the public safetensors) and a
SHA-256 over the base's weight files, and warns when a base loaded later has other weights.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from llmft.models import embedded

log = logging.getLogger(__name__)

CARD_FIELDS = ("llmft_base", "base_variant", "base_weights_sha256")  # front matter keys of our README


@dataclass(frozen=True)
class BaseModel:
    """`id`: portable name (`llmft:smollm2-135m-instruct`, a Hub id, or the path as given);
    `hub_id`: the Hub model it derives from, when known; `variant`: what exactly the weights are."""

    id: str
    hub_id: str | None
    variant: str | None
    weights_sha256: str | None

    def card(self) -> dict:
        return asdict(self)


def describe(name_or_path: str, local_folder: str | None) -> BaseModel:
    """The provenance of a base loaded from `local_folder` (None: a Hub id not in the local cache)."""
    digest = weights_sha256(local_folder) if local_folder else None
    if embedded.is_embedded(name_or_path):
        hub_id, variant = embedded.provenance(name_or_path[len(embedded.PREFIX):])
        return BaseModel(name_or_path, hub_id, variant, digest)
    is_local = local_folder is not None and Path(name_or_path).expanduser().exists()
    return BaseModel(name_or_path, None if is_local else name_or_path, None, digest)


def weights_sha256(folder: str | Path) -> str | None:
    """SHA-256 over the (sorted) safetensors / bin weight files of a model folder."""
    files = sorted(p for p in Path(folder).glob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not files:
        return None
    return _hash_files(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@lru_cache(maxsize=8)
def _hash_files(files: tuple[tuple[str, int, int], ...]) -> str:
    total = hashlib.sha256()
    for path, size, mtime_ns in files:
        total.update(f"{Path(path).name}:{file_sha256(path, size, mtime_ns)}\n".encode())
    return total.hexdigest()


def digest_cache_path() -> Path:
    return embedded.cache_root() / "weights_sha256.json"


def file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of one weight file, kept in `digest_cache_path()` under its path, size and modification
    time: an 8B model's 16 GB take 10-20 s to hash, at every run's start otherwise."""
    key = f"{Path(path).resolve()}|{size}|{mtime_ns}"
    cache_file = digest_cache_path()
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), str):
        return known[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    known[key] = digest.hexdigest()
    try:  # written whole, then renamed: a concurrent run reads the old or the new file, never half of one
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(known, indent=0))
        os.replace(partial, cache_file)
    except OSError as err:  # a read-only cache: hash again next time
        log.debug("weight digests not cached in %s: %s", cache_file, err)
    return known[key]


def readme(base: BaseModel, kind: str) -> str:
    """README.md of a saved adapter or model: front matter (Hub-style, plus llmft's fields) and how to load it."""
    fields = {"library_name": "peft" if kind == "adapter" else "transformers", "base_model": base.hub_id,
              "llmft_base": base.id, "base_variant": base.variant or "as published",
              "base_weights_sha256": base.weights_sha256 or "unknown", "llmft_version": _llmft_version()}
    # JSON strings are valid YAML scalars, whatever characters the value holds
    front = ["---", *(f"{k}: {json.dumps(v)}" for k, v in fields.items() if v is not None), "---", ""]
    load = (
        f"from llmft.models.embedded import resolve\nbase = AutoModelForCausalLM.from_pretrained(resolve(\"{base.id}\"))"
        if embedded.is_embedded(base.id) else f"base = AutoModelForCausalLM.from_pretrained(\"{base.id}\")"
    )
    body = [
        f"# {'LoRA adapter' if kind == 'adapter' else 'Fine-tuned model'} trained with llmft", "",
        f"- Base: `{base.id}`" + (f"; weights: {base.variant}" if base.variant else ""),
        f"- Base weights SHA-256: `{base.weights_sha256 or 'unknown'}` (llmft warns when a base with other weights is loaded)",
        "",
    ]
    if kind == "adapter":
        body += ["```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM",
                 load, "model = PeftModel.from_pretrained(base, \"<this folder>\")", "```", ""]
    return "\n".join(front + body)


def read_card(folder: str | Path) -> dict[str, str]:
    """The llmft fields of a saved folder's README front matter ({} when there are none)."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        return {}
    match = re.match(r"---\n(.*?)\n---\n", path.read_text(encoding="utf-8"), re.S)
    fields = yaml.safe_load(match.group(1)) if match else None
    return {k: str(v) for k, v in (fields or {}).items() if k in CARD_FIELDS}


def check_base(saved: str | Path, base: BaseModel) -> bool:
    """Warn (and return False) when `saved` was trained on a base whose weights hash differs from `base`'s."""
    recorded = read_card(saved).get("base_weights_sha256")
    if not recorded or recorded == "unknown" or base.weights_sha256 is None or recorded == base.weights_sha256:
        return True
    log.warning("%s was trained on %s with weights sha256 %s…, but the base loaded now has %s…: "
                "results will differ from the run's", saved, base.id, recorded[:12], base.weights_sha256[:12])
    return False


def _llmft_version() -> str:
    try:
        return importlib.metadata.version("llmft")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
