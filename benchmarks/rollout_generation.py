"""Side by side: sampling one rollout with the LoRA adapter active (what online methods do) against
merging it into the base first (`ModelHandle.merged()`: clone every base weight, merge, generate,
unmerge and copy the originals back), same prompts, same seed.

    python benchmarks/rollout_generation.py [--responses 64] [--repeats 3] [--max-new-tokens 64]

Prints seconds per rollout for each, the ratio, whether the weights were bit-exact afterwards, and
the CPU flags it ran on. Prompts are the suite's training prompts (the mix a GRPO run samples).
"""
from __future__ import annotations

import argparse
import time

import lightning as L
import torch

from llmft import models
from llmft.data import tasks
from llmft.data.templates import ChatRenderer
from llmft.models.factory import end_of_turn_ids
from llmft.models.sampling import SamplingSpec, sample


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "none of avx2/avx512"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--responses", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    handle = models.build(models.ModelSpec("llmft:smollm2-135m-instruct"), models.LoraSpec(),
                          models.PrecisionSpec("32-true"))
    with torch.no_grad():  # a trained-looking adapter: LoRA B starts at zero, which merging would not test
        for name, p in handle.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    renderer = ChatRenderer(handle.tokenizer, 512)
    rows = tasks.load_bundled("prompt", "train")[: args.responses]
    prompts = [handle.tokenizer(renderer.prompt_text(r["prompt"], r.get("tools")), add_special_tokens=False)["input_ids"]
               for r in rows]
    stop, pad = sorted(end_of_turn_ids(handle.tokenizer)), handle.tokenizer.pad_token_id
    spec = SamplingSpec(max_new_tokens=args.max_new_tokens)
    before = {n: p.detach().clone() for n, p in handle.model.named_parameters()}

    def active() -> torch.Tensor:
        return sample(handle.model, prompts, pad, stop, spec).sequences

    def merged() -> torch.Tensor:
        with handle.merged() as model:
            return sample(model, prompts, pad, stop, spec).sequences

    times = {}
    for name, fn in (("adapter active", active), ("merged", merged)) * args.repeats:
        L.seed_everything(0, verbose=False)
        start = time.perf_counter()
        fn()
        times.setdefault(name, []).append(time.perf_counter() - start)
    exact = all(torch.equal(p, before[n]) for n, p in handle.model.named_parameters())
    best = {name: min(t) for name, t in times.items()}
    print(f"CPU flags: {cpu_flags()}; threads {torch.get_num_threads()}; {args.responses} responses, "
          f"<= {args.max_new_tokens} new tokens, best of {args.repeats}")
    for name, t in best.items():
        print(f"  {name:<15} {t:6.2f} s per rollout")
    print(f"  merged / active: {best['merged'] / best['adapter active']:.2f}; weights bit-exact after merging: {exact}")


if __name__ == "__main__":
    main()
