"""Side-by-side timing of one SFT optimizer step's forward+backward, same batches, same model.

    python benchmarks/sft_step.py [--model llmft:smollm2-135m-instruct] [--batches 6] [--repeats 2]

Compares (a) logits for every position vs only where a label is supervised (what methods/sft.py
does) and (b) fp32 vs bf16 autocast. Batches are real rows of the bundled suite, length-grouped as in
training. Prints tokens/s per variant and the ratios; also checks both paths give the same loss.
"""
from __future__ import annotations

import argparse
import time

import torch

from llmft import models
from llmft.data import tasks
from llmft.data.collate import LengthGroupedWindows, pad_batch
from llmft.data.encoders import encode_rows
from llmft.data.templates import ChatRenderer
from llmft.losses import sft_loss_sum
from llmft.models.forward import supervised_logits


def full_logits(model, batch):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]


def timed(model, batches, forward, autocast: bool, repeats: int) -> tuple[float, float]:
    tokens = sum(int(b["attention_mask"].sum()) for b in batches) * repeats
    loss_total = 0.0
    start = time.perf_counter()
    for _ in range(repeats):
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                nll, n = sft_loss_sum(*forward(model, batch))
            (nll / n).backward()
            loss_total += float(nll.detach())
    model.zero_grad(set_to_none=True)
    return tokens / (time.perf_counter() - start), loss_total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="llmft:smollm2-135m-instruct")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    args = parser.parse_args()
    handle = models.build(models.ModelSpec(args.model), models.LoraSpec(), models.PrecisionSpec("32-true"))
    renderer = ChatRenderer(handle.tokenizer, 512)
    examples, _ = encode_rows(tasks.load_bundled("chat", "train"), renderer)
    windows = LengthGroupedWindows([len(e["input_ids"]) for e in examples], 8, seed=0).windows(0)[: args.batches]
    batches = [pad_batch([examples[i] for i in w], handle.tokenizer.pad_token_id) for w in windows]
    timed(handle.model, batches[:1], supervised_logits, False, 1)  # warm-up
    variants = {"full logits, fp32": (full_logits, False), "supervised logits, fp32": (supervised_logits, False)}
    if args.bf16:
        variants["supervised logits, bf16 autocast"] = (supervised_logits, True)
    results = {name: timed(handle.model, batches, fwd, ac, args.repeats) for name, (fwd, ac) in variants.items()}
    base_speed, base_loss = results["full logits, fp32"]
    for name, (speed, loss) in results.items():
        print(f"{name:<36} {speed:8.1f} tokens/s  x{speed / base_speed:.2f}  summed NLL {loss:.3f}")
    print(f"same loss (full vs supervised logits): {abs(results['supervised logits, fp32'][1] - base_loss) < 1e-2 * abs(base_loss)}")


if __name__ == "__main__":
    main()
