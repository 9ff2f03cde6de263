"""Weight-file digests are cached on disk by path, size and modification time (llmft.models.provenance)."""
from __future__ import annotations

import hashlib
import json
import os

from llmft.models import provenance


def test_a_weight_file_is_hashed_once_and_again_when_it_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMFT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    first = provenance.weights_sha256(folder)
    (entry, digest), = json.loads(provenance.digest_cache_path().read_text()).items()
    assert digest == hashlib.sha256(b"a" * 1000).hexdigest() and entry.startswith(str(weights.resolve()))

    # the same path, size and time: the stored digest is used, not the bytes (so it is what is stored)
    stat = weights.stat()
    weights.write_bytes(b"b" * 1000)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    provenance._hash_files.cache_clear()
    assert provenance.weights_sha256(folder) == first

    # a new modification time: hashed again
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    provenance._hash_files.cache_clear()
    assert provenance.weights_sha256(folder) != first
    assert hashlib.sha256(b"b" * 1000).hexdigest() in json.loads(provenance.digest_cache_path().read_text()).values()


def test_an_unwritable_cache_still_gives_the_digest(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("LLMFT_CACHE", str(blocker))
    (tmp_path / "model.safetensors").write_bytes(b"xyz")
    provenance._hash_files.cache_clear()
    assert provenance.weights_sha256(tmp_path) is not None
