"""The GPU suite of benchmarks/vs_trl.py: llmft against TRL on Llama shapes of 1B and 8B with random
weights, in time-capped sections that each write their results as they finish.

    bash benchmarks/gpu_suite.sh                     # on the GPU machine: wheels installed, then this
    python benchmarks/gpu_suite.py --out DIR [--budget 330] [--sections ceiling,varlen,...]
    python benchmarks/gpu_suite.py --smoke --out DIR # the same code on a CPU: tiny shape, a few steps

Sections, in the order they run (each skipped, and recorded as skipped, when too little of `--budget` is
left for it; `--sections` picks some):
- ceiling: the bf16 matmul ceiling MFU is measured against (8192^3 products, TFLOP/s).
- varlen: llmft_sdpa's CUDA varlen path on a packed row against per-document attention in float32
  (outputs and gradients), and its speed against the per-document loop.
- sft_lora_1b, dpo_lora_1b, sft_full_1b, dpo_lora_1b_shared_prompt, dpo_lora_1b_precomputed: llmft
  (packing at 2048 tokens, except `_shared_prompt`: unpacked pairs, each pair's prompt computed once;
  `precision=auto`, i.e. bf16-mixed) against TRL (bf16 autocast on the same examples per step,
  padded; for SFT LoRA also padding-free), each in its own process; tokens/s, peak GPU memory (allocated
  and reserved), first-step loss, and MFU: model FLOPs of the nominal tokens (both whole sequences of a
  pair, also where llmft computes their shared prompt once; 6 x matmul weights per token for full
  training, 4 x for LoRA, plus 2 x for a reference forward; attention not counted) against the
  *measured* matmul ceiling (about 790 TFLOP/s on an H200, below its datasheet's dense bf16 figure).
  If the varlen check fails or is off, the training runs use the per-document loop (LLMFT_VARLEN=0).
- qlora_8b: llmft's QLoRA on the Llama-3-8B shape, one packed row of up to 2048 tokens a step,
  gradient checkpointing: peak GPU memory (target: under 12 GiB) and tokens/s.

Writes DIR/gpu_suite.jsonl (a line a measurement) and DIR/gpu_suite.md (the tables so far).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from random_llama import matmul_parameters, write_random_llama  # noqa: E402
from vs_trl import run_worker, table  # noqa: E402

# TRL without flash-attn (the GPU machine has none): padded batches are its correct setting; padding-free
# flattens documents under sdpa, which TRL warns mixes them. TRL 1.16's DPO ignores padding_free.
TRL_SETTINGS = ("bf16_autocast",)


@dataclass
class Workload:
    name: str
    base: str  # a benchmarks/vs_trl.py workload
    shape: str
    batch: int  # examples (pairs) a step
    flops_factor: int  # model FLOPs per token / matmul weights
    llmft_overrides: tuple[str, ...] = ()
    trl_settings: tuple[str, ...] = TRL_SETTINGS
    estimate_s: float = 60.0  # started only with this much of the budget left
    packing: bool = True  # False: unpacked pair micro-batches, which share each pair's prompt


WORKLOADS = [  # in order of priority: what a short budget leaves out comes last
    Workload("sft_lora_1b", "sft_lora", "llama-1b", 64, 4, trl_settings=("bf16_autocast", "bf16_autocast+padding_free")),
    Workload("qlora_8b", "sft_qlora", "llama-8b", 12, 4, ("model.gradient_checkpointing=true",), (), 100.0),
    Workload("dpo_lora_1b_shared_prompt", "dpo_lora", "llama-1b", 32, 6, packing=False),
    Workload("dpo_lora_1b", "dpo_lora", "llama-1b", 32, 6),
    Workload("sft_full_1b", "sft_full", "llama-1b", 64, 6),
    Workload("dpo_lora_1b_precomputed", "dpo_lora", "llama-1b", 32, 4, ("method.precompute_ref=true",),
             ("bf16_autocast+precompute_ref",)),
]


class Suite:
    def __init__(self, args: argparse.Namespace):
        self.args, self.started = args, time.perf_counter()
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []
        self.ceiling_tflops: float | None = None

    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.started)

    def record(self, section: str, **fields) -> None:
        entry = {"section": section, "at_s": round(time.perf_counter() - self.started, 1), **fields}
        self.records.append(entry)
        with open(self.out / "gpu_suite.jsonl", "a") as handle:
            handle.write(json.dumps(entry, default=str) + "\n")
        try:
            (self.out / "gpu_suite.md").write_text(self.markdown())
        except Exception as err:  # the JSON lines are the record; a table that cannot be drawn stops nothing
            print(f"gpu_suite.md not written: {type(err).__name__}: {err}", flush=True)
        print(json.dumps(entry, default=str)[:400], flush=True)

    def markdown(self) -> str:
        lines = [f"# GPU suite ({'smoke, CPU' if self.args.smoke else device_name()})", ""]
        for entry in self.records:
            if "results" in entry:
                lines.append(table(entry["section"], entry["results"]))
                lines += [f"- {r['side']} {r['setting']}: MFU {r['mfu']:.1%}" for r in entry["results"]
                          if r.get("mfu") is not None]
            else:
                lines.append(f"\n- {entry['section']}: " + ", ".join(f"{k} {v}" for k, v in entry.items()
                                                                     if k not in ("section", "at_s")))
        return "\n".join(lines) + "\n"

    def run(self, name: str, estimate_s: float, body: Callable[[float], dict | None]) -> None:
        if self.args.sections and name not in self.args.sections:
            return
        if self.left() < estimate_s:
            self.record(name, skipped=f"{self.left():.0f} s of the budget left, {estimate_s:.0f} s needed")
            return
        try:
            fields = body(self.left())
        except Exception as err:  # a section's failure is a result; the next section still runs
            fields = {"error": f"{type(err).__name__}: {err}"}
        if fields is not None:
            self.record(name, **fields)


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "CPU"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_ceiling(size: int, repeats: int = 10) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    seconds = time.perf_counter() - started
    return {"tflops": round(2 * size**3 * repeats / seconds / 1e12, 1), "size": size}


def varlen_check() -> dict:
    """llmft_sdpa on one packed row of three documents: the CUDA varlen kernel against float32
    per-document attention, and against the per-document sdpa loop it replaces (forward + backward)."""
    from llmft.models import attention

    if not torch.cuda.is_available() or attention.varlen_attn is None:
        return {"skipped": "needs CUDA and torch.nn.attention.varlen"}
    attention._varlen_failed.clear()
    heads, kv_heads, dim, lengths = 32, 8, 64, (300, 700, 1048)
    module = torch.nn.Module()
    module.num_key_value_groups = heads // kv_heads
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda", dtype=torch.int32)
    tokens = sum(lengths)
    torch.manual_seed(0)
    leaves = [torch.randn(1, h, tokens, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
              for h in (heads, kv_heads, kv_heads)]
    kwargs = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lengths), max_length_k=max(lengths),
                  scaling=dim**-0.5, dropout=0.0)

    def attend(use_varlen: bool) -> tuple[torch.Tensor, list[torch.Tensor], float]:
        saved = attention.varlen_attn
        attention.varlen_attn = saved if use_varlen else None
        try:
            for leaf in leaves:
                leaf.grad = None
            out, _ = attention.sdpa_per_document(module, *leaves, None, **kwargs)
            out.float().square().sum().backward()
            grads = [leaf.grad.float() for leaf in leaves]
            sync()
            started = time.perf_counter()
            for _ in range(10):
                again, _ = attention.sdpa_per_document(module, *leaves, None, **kwargs)
                again.float().square().sum().backward()
            sync()
            return out.detach().float(), grads, (time.perf_counter() - started) / 10
        finally:
            attention.varlen_attn = saved

    q, k, v = (leaf.detach().float().requires_grad_() for leaf in leaves)
    pieces = [torch.nn.functional.scaled_dot_product_attention(
        q[:, :, s:e], k[:, :, s:e].repeat_interleave(heads // kv_heads, 1),
        v[:, :, s:e].repeat_interleave(heads // kv_heads, 1), is_causal=True).transpose(1, 2)
        for s, e in zip(cu[:-1].tolist(), cu[1:].tolist())]
    reference = torch.cat(pieces, dim=1)
    reference.square().sum().backward()
    fast, fast_grads, fast_s = attend(True)
    slow, _, slow_s = attend(False)
    error = float((fast - reference).abs().max())
    if attention._varlen_failed or not error < 0.05:  # then the training runs use the per-document loop
        os.environ["LLMFT_VARLEN"] = "0"
    return {"varlen_used": not attention._varlen_failed, "failure": attention._varlen_failed[:1],
            "workers_use_varlen": os.environ.get("LLMFT_VARLEN") != "0",
            "max_abs_error_out": float((fast - reference).abs().max()),
            "loop_max_abs_error_out": float((slow - reference).abs().max()),
            "max_rel_error_grads": max(float((g - r.grad).norm() / r.grad.norm())
                                       for g, r in zip(fast_grads, (q, k, v))),
            "varlen_ms": round(fast_s * 1e3, 2), "loop_ms": round(slow_s * 1e3, 2)}


def run_workload(suite: Suite, work: Workload, left: float) -> dict:
    args = suite.args
    shape = "tiny" if args.smoke else work.shape
    tokenizer = str(args.tokenizer) if args.tokenizer.is_dir() else None
    folder = write_random_llama(shape, args.models / shape, "cuda" if torch.cuda.is_available() else "cpu", tokenizer)
    run_args = argparse.Namespace(
        model=str(folder), batch=args.smoke_batch if args.smoke else work.batch, max_length=2048 if not args.smoke
        else 512, steps=args.steps, warmup=args.warmup, seed=42,
        llmft_overrides=[f"data.packing={str(work.packing).lower()}", *work.llmft_overrides, *args.llmft_overrides])
    results = []
    for side, setting in [("llmft", "auto")] + [("trl", s) for s in work.trl_settings]:
        timeout = suite.left() - 5
        if timeout < 30:
            results.append({"side": side, "workload": work.base, "setting": setting, "error": "budget spent"})
            continue
        result = run_worker(run_args, side, work.base, setting, timeout=min(timeout, args.worker_timeout))
        if result.get("tokens_per_s") and suite.ceiling_tflops:
            model_tflops = result["tokens_per_s"] * work.flops_factor * matmul_parameters(shape) / 1e12
            result |= {"model_tflops": round(model_tflops, 2), "mfu": model_tflops / suite.ceiling_tflops}
        results.append({**result, "workload": work.name})
    return {"shape": shape, "matmul_parameters": matmul_parameters(shape), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_suite_out"))
    parser.add_argument("--budget", type=float, default=340.0, help="seconds for the whole suite")
    parser.add_argument("--worker-timeout", type=float, default=150.0, help="seconds for one side of one workload")
    parser.add_argument("--sections", type=lambda s: s.split(","), default=None)
    parser.add_argument("--models", type=Path, default=Path("/tmp/llmft_random_models"))
    parser.add_argument("--tokenizer", type=Path, default=ROOT / ".whl" / "tokenizer",
                        help="SmolLM2's tokenizer folder (gpu_wheels.sh saves it); missing: the embedded model's")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny shape on this machine, to check the code")
    parser.add_argument("--smoke-batch", type=int, default=4)
    parser.add_argument("--llmft-overrides", nargs="*", default=[])
    args = parser.parse_args()
    suite = Suite(args)
    versions = {}
    for package in ("torch", "transformers", "peft", "trl", "bitsandbytes", "lightning"):
        from importlib.metadata import PackageNotFoundError, version
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "missing"
    suite.record("environment", device=device_name(), **versions)

    def ceiling(_: float) -> dict:
        result = matmul_ceiling(512 if args.smoke else 8192)
        suite.ceiling_tflops = result["tflops"]
        return result

    suite.run("ceiling", 20, ceiling)
    suite.run("varlen", 20, lambda _: varlen_check())
    for work in WORKLOADS:
        suite.run(work.name, 20 if args.smoke else work.estimate_s, lambda left, w=work: run_workload(suite, w, left))
    print(f"done in {time.perf_counter() - suite.started:.0f} s; {args.out / 'gpu_suite.md'}", flush=True)


if __name__ == "__main__":
    main()
