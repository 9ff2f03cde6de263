"""llmft against TRL, side by side: the same model, rows, batches, steps, LoRA and seed, one machine.

    pip install -e '.[bench]'          # TRL, the benchmark's only extra
    python benchmarks/vs_trl.py [--workloads sft_lora,sft_full,dpo_lora,orpo,kto] [--steps 7] [--repeats 2] [--epochs 1]
                                [--trl-settings fp32,bf16_autocast,bf16_weights,bf16_autocast+padding_free]

Each measurement is its own process (peak RSS is per process), the sides alternating within every
repeat. llmft runs `python train.py` as is (its config composed with the workload's overrides;
`precision=auto`); its run card's `throughput` (llmft.throughput) gives the rates. TRL runs its own
trainer on *the same batches in the same order*: the examples llmft's data module encoded (same
template, same assistant-only labels), handed to TRL already tokenised, read sequentially. So the
first step's loss must agree (it is printed with the difference), and the supervised tokens are the
same: TRL would otherwise also supervise the newline after `<|im_end|>`, which llmft does not.
Both sides time the whole loop from the end of one optimizer step to the end of the next, after
`--warmup` steps. Tokens are real (non-padding) tokens computed over. The learning rate is constant
on both sides: the two count warm-up differently (with one warm-up step TRL's first update has rate 0,
llmft's half the rate), which made the mean losses of otherwise identical runs differ by 0.15.

Printed per workload: tokens/s, examples/s, median step time, peak RSS (MiB), padding fraction, the
first-step loss and the mean loss over the timed steps, for llmft and each TRL setting, and the ratio
of llmft to TRL's best setting. `--json` writes every measurement. On a GPU each side also reports its
peak allocated GPU memory; benchmarks/gpu_suite.py runs the GPU workloads (1B and 8B Llama shapes).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {  # llmft's overrides; TRL gets the same method, peft and data
    "sft_lora": ["method=sft", "peft=lora"],
    "sft_full": ["method=sft", "peft=full", "optim.lr=2e-5"],
    "dpo_lora": ["method=dpo", "peft=lora"],
    "orpo": ["method=orpo", "peft=lora"],
    "kto": ["method=kto", "peft=lora"],
    "sft_qlora": ["method=sft", "peft=qlora"],  # llmft alone (benchmarks/gpu_suite.py: its GPU memory)
}
TRL_SETTINGS = ("fp32", "bf16_autocast", "bf16_weights", "bf16_autocast+padding_free")
FIELDS = ("tokens_per_s", "examples_per_s", "median_step_seconds", "peak_rss_mib", "peak_gpu_mib",
          "peak_gpu_reserved_mib", "padding_fraction", "first_loss", "mean_loss")


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return platform.processor()
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{os.cpu_count()} cores, " + " ".join(shown)


def workload_overrides(args: argparse.Namespace, workload: str) -> list[str]:
    """`python train.py` overrides of a workload: `steps` x `epochs` optimizer steps over exactly steps x batch rows."""
    return [*WORKLOADS[workload], f"model.name_or_path={args.model}", f"data.batch_size={args.batch}",
            f"data.max_length={args.max_length}", f"data.limit_train={args.steps * args.batch}",
            f"trainer.max_steps={args.steps * args.epochs}", "schedule=constant", "evaluate=false", "+trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false", f"callbacks.throughput.warmup_steps={args.warmup}",
            f"seed={args.seed}", *args.llmft_overrides]


def run_worker(args: argparse.Namespace, side: str, workload: str, setting: str, timeout: float | None = None
               ) -> dict:
    command = [sys.executable, str(Path(__file__).with_name("vs_trl_worker.py")), side, workload, setting,
               json.dumps(workload_overrides(args, workload)), json.dumps(vars(args), default=str)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        out = "".join(part.decode(errors="replace") if isinstance(part, bytes) else (part or "")
                      for part in (err.stdout, err.stderr))
        tail = "\n".join(out.splitlines()[-8:])
        return {"side": side, "workload": workload, "setting": setting, "error": f"{tail}\ntimed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:]) or f"exit status {done.returncode}, no output"
        return {"side": side, "workload": workload, "setting": setting, "error": tail}
    result = json.loads(lines[-1][len("RESULT "):])
    return {**result, "side": side, "workload": workload, "setting": setting,
            "process_seconds": round(time.perf_counter() - started, 1)}


def median_of(results: list[dict], field: str) -> float | None:
    values = [r[field] for r in results if r.get(field) is not None]
    return statistics.median(values) if values else None


def table(workload: str, results: list[dict]) -> str:
    sides = sorted({(r["side"], r["setting"]) for r in results}, key=lambda s: (s[0] != "llmft", s[1]))
    rows = {s: [r for r in results if (r["side"], r["setting"]) == s and "error" not in r] for s in sides}
    lines = [f"\n## {workload}", "| side | " + " | ".join(FIELDS) + " | runs |", "|" + "---|" * (len(FIELDS) + 2)]
    for side, setting in sides:
        got = rows[(side, setting)]
        cells = [_cell(median_of(got, f)) for f in FIELDS]
        errors = [(r["error"].splitlines() or ["no output"])[-1] for r in results
                  if (r["side"], r["setting"]) == (side, setting) and "error" in r]
        lines.append(f"| {side} {setting} | " + " | ".join(cells) + f" | {len(got)}"
                     + (f" ({len(errors)} failed: {errors[0]})" if errors else "") + " |")
    llmft = rows.get(next((s for s in sides if s[0] == "llmft"), None), [])
    trl = {s: got for s, got in rows.items() if s[0] == "trl" and got}
    if llmft and trl:
        best = max(trl, key=lambda s: median_of(trl[s], "tokens_per_s") or 0)
        ours, theirs = median_of(llmft, "tokens_per_s"), median_of(trl[best], "tokens_per_s")
        memory = "peak_gpu_mib" if median_of(llmft, "peak_gpu_mib") else "peak_rss_mib"  # on a GPU its memory
        mem_ours, mem_theirs = median_of(llmft, memory), median_of(trl[best], memory)
        loss_ours, loss_theirs = median_of(llmft, "first_loss"), median_of(trl[best], "first_loss")
        shown = "peak GPU memory" if memory == "peak_gpu_mib" else "peak RSS"
        lines.append(f"\nllmft / TRL's best ({best[1]}): tokens/s x{ours / theirs:.2f}, {shown} x{mem_ours / mem_theirs:.2f},"
                     f" first-step loss {loss_ours:.4f} vs {loss_theirs:.4f} (difference {loss_ours - loss_theirs:+.1e})")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="sft_lora,sft_full,dpo_lora,orpo,kto")
    parser.add_argument("--trl-settings", default=",".join(TRL_SETTINGS))
    parser.add_argument("--model", default="llmft:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=7, help="optimizer steps a run (the first --warmup are not timed)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of a run")
    parser.add_argument("--epochs", type=int, default=1,
                        help="passes over the same steps x batch rows (a run is steps x epochs optimizer steps); "
                             "--epochs 2 --warmup <steps> times the second pass, after memory and kernels are warm")
    parser.add_argument("--batch", type=int, default=8, help="examples (pairs for DPO/ORPO) a step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="alternations of the two sides")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--llmft-overrides", nargs="*", default=[], help="extra train.py overrides for llmft's side")
    parser.add_argument("--json", type=Path, default=None, help="write every measurement here")
    args = parser.parse_args()
    workloads = args.workloads.split(",")
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"--workloads: unknown {unknown}; choose from {', '.join(WORKLOADS)}")
    settings = [s for s in args.trl_settings.split(",") if s]  # "" = llmft alone
    print(f"machine: {cpu_flags()}; torch {_version('torch')}, transformers {_version('transformers')}, "
          f"peft {_version('peft')}, trl {_version('trl')}", flush=True)
    results: list[dict] = []
    for repeat in range(args.repeats):
        for workload in workloads:
            for side, setting in [("llmft", "auto")] + [("trl", s) for s in settings]:
                result = run_worker(args, side, workload, setting)
                results.append({**result, "repeat": repeat})
                shown = result.get("error", "").splitlines()[-1:] or [
                    f"{result['tokens_per_s']:.1f} tokens/s, first loss {result['first_loss']:.4f} "
                    f"({result['precision']})"]
                print(f"[{repeat}] {workload:<9} {side} {setting:<26} {shown[0]}", flush=True)
    for workload in workloads:
        print(table(workload, [r for r in results if r["workload"] == workload]))
    if args.json:
        args.json.write_text(json.dumps({"machine": cpu_flags(), "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=1))


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
