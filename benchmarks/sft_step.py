"""Side-by-side timing of one SFT optimizer step's forward+backward, same batches, same model.

    python benchmarks/sft_step.py [--model llmft:smollm2-135m-instruct] [--batches 6] [--repeats 2]

Compares (a) logits for every position, only at the columns where a label is supervised
(`logits_to_keep`), and chunked log-probs at exactly the supervised tokens (what methods/sft.py does:
`supervised_nll_sum`, `llmft.losses.linear_logps`) and (b) fp32 vs bf16 autocast. Batches are real rows of the bundled suite, length-grouped as in
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
from llmft.models.forward import supervised_logits, supervised_nll_sum


def full_logits(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sft_loss_sum(logits, batch["labels"])


def kept_logits(model, batch):
    return sft_loss_sum(*supervised_logits(model, batch))


def timed(model, batches, forward, autocast: bool, repeats: int) -> tuple[float, float]:
    tokens = sum(int(b["attention_mask"].sum()) for b in batches) * repeats
    loss_total = 0.0
    start = time.perf_counter()
    for _ in range(repeats):
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                nll, n = forward(model, batch)
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
    timed(handle.model, batches[:1], supervised_nll_sum, False, 1)  # warm-up
    variants = {"full logits, fp32": (full_logits, False), "supervised columns' logits, fp32": (kept_logits, False),
                "chunked log-probs, fp32": (supervised_nll_sum, False)}
    if args.bf16:
        variants |= {"supervised columns' logits, bf16 autocast": (kept_logits, True),
                     "chunked log-probs, bf16 autocast": (supervised_nll_sum, True)}
    results = {name: timed(handle.model, batches, fwd, ac, args.repeats) for name, (fwd, ac) in variants.items()}
    base_speed, base_loss = results["full logits, fp32"]
    for name, (speed, loss) in results.items():
        print(f"{name:<36} {speed:8.1f} tokens/s  x{speed / base_speed:.2f}  summed NLL {loss:.3f}")
    same = all(abs(results[name][1] - base_loss) < 1e-5 * abs(base_loss) for name in results if "fp32" in name)
    print(f"same fp32 loss on every path (1e-5 relative): {same}")


if __name__ == "__main__":
    main()
