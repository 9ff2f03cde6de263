"""One measurement of benchmarks/vs_trl.py, in its own process (see that file):

    python benchmarks/vs_trl_worker.py <llmft|trl> <workload> <setting> '<train.py overrides as JSON>' '<args JSON>'

Prints `RESULT {json}` last: tokens/s, examples/s, median step time, peak RSS, padding fraction,
first-step and mean loss, and the precision the side ran in.
"""
from __future__ import annotations

import csv
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def compose(overrides: list[str], out: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg.hydra
    return cfg


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- llmft: python train.py as it is ---------------------------------------------------------


def run_llmft(overrides: list[str], out: Path) -> dict:
    from llmft.train import run

    cfg = compose(overrides, out)
    card = run(cfg)["card"]
    with open(out / "metrics.csv") as handle:
        losses = [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    warmup = card["throughput"]["warmup_steps"]
    return {**{k: card["throughput"][k] for k in ("tokens_per_s", "examples_per_s", "median_step_seconds",
                                                  "padding_fraction")},
            "first_loss": losses[0], "mean_loss": statistics.fmean(losses[warmup:]), "steps": len(losses),
            "precision": f"{card['precision']}, weights {cfg.precision.weights_dtype}"}


# --- TRL on llmft's batches ------------------------------------------------------------------


def llmft_windows(cfg, epochs: int = 1) -> tuple[list[list[dict]], str, object]:
    """The training windows `python train.py` would run for `cfg` (epochs 0 to `epochs` - 1, in order: Lightning
    sets the sampler's epoch as each begins), its view and tokenizer."""
    import lightning as L
    from hydra.utils import instantiate
    from transformers import AutoTokenizer

    from llmft.data.datamodule import ViewDataModule
    from llmft.data.rows import load_rows
    from llmft.data.templates import ChatRenderer
    from llmft.models import embedded

    L.seed_everything(cfg.seed, workers=True)
    data_spec, method_cls = instantiate(cfg.data), instantiate(cfg.method).func
    rows = load_rows(data_spec, method_cls.view, cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(embedded.resolve(cfg.model.name_or_path))
    renderer = ChatRenderer(tokenizer, data_spec.max_length, chat_template=data_spec.chat_template)
    datamodule = ViewDataModule(rows, renderer, data_spec.batch_size, 1, cfg.seed, 0, view=method_cls.view,
                                max_dropped_fraction=data_spec.max_dropped_fraction)
    datamodule.setup("fit")
    loader, windows = datamodule.train_dataloader(), []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        windows += list(loader)
    return windows, method_cls.view, tokenizer


def unpadded(micro: dict, prefix: str = "") -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of each row of a right-padded micro-batch."""
    lengths = micro[prefix + "attention_mask"].sum(-1).tolist()
    return [(micro[prefix + "input_ids"][i, :n].tolist(), micro[prefix + "labels"][i, :n].tolist())
            for i, n in enumerate(lengths)]


def completion_split(ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    """(prompt, completion) at the first supervised token; the completion ends at the last supervised
    token, so TRL (which supervises the whole completion) supervises exactly llmft's tokens."""
    supervised = [i for i, label in enumerate(labels) if label != -100]
    return ids[: supervised[0]], ids[supervised[0] : supervised[-1] + 1]


def orpo_row(chosen: tuple[list[int], list[int]], rejected: tuple[list[int], list[int]]) -> dict:
    """TRL's (experimental) ORPO trainer reads whole rows with their labels, as its `tokenize_row` makes them."""
    prompt, _ = completion_split(*chosen)
    row = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for side, (ids, labels) in (("chosen", chosen), ("rejected", rejected)):
        row |= {f"{side}_input_ids": ids, f"{side}_attention_mask": [1] * len(ids), f"{side}_labels": labels}
    return row


def trl_rows(windows: list[list[dict]], view: str, workload: str) -> list[dict]:
    rows = []
    for window in windows:
        for micro in window:
            if view == "chat":
                rows += [{"input_ids": ids, "labels": labels} for ids, labels in unpadded(micro)]
            elif workload == "orpo":
                rows += [orpo_row(c, r) for c, r in zip(unpadded(micro, "chosen_"), unpadded(micro, "rejected_"))]
            elif view == "pair":
                for (c_ids, c_labels), (r_ids, r_labels) in zip(unpadded(micro, "chosen_"), unpadded(micro, "rejected_")):
                    prompt, chosen = completion_split(c_ids, c_labels)
                    prompt_r, rejected = completion_split(r_ids, r_labels)
                    if prompt != prompt_r:
                        raise ValueError("a pair's chosen and rejected rows do not share their prompt")
                    rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
            else:  # unpaired (KTO); the KL completions as TRL's dataset preparation builds them, per batch
                batch = [(*completion_split(ids, labels), bool(desirable))
                         for (ids, labels), desirable in zip(unpadded(micro), micro["desirable"].tolist())]
                rotated = [batch[-1][1]] + [completion for _, completion, _ in batch[:-1]]
                rows += [{"prompt_ids": prompt, "completion_ids": completion, "KL_completion_ids": kl, "label": label}
                         for (prompt, completion, label), kl in zip(batch, rotated)]
    return rows


class StepClock:
    """A transformers TrainerCallback (duck-typed) timing each optimizer step, end to end."""

    def __init__(self):
        self.ends: list[float] = []
        self.started = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():  # the step's kernels done, not just queued (llmft's Throughput does the same)
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def __getattr__(self, name):  # every other callback event: nothing
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def seconds(self) -> list[float]:
        return [b - a for a, b in zip([self.started] + self.ends[:-1], self.ends)]


def counting(trainer_cls, rows_per_example: int):
    """`trainer_cls` reading its dataset in order, as given, and counting each step's tokens."""
    from torch.utils.data import SequentialSampler

    class Counted(trainer_cls):
        step_tokens: list[tuple[int, int, int]] = []

        def _get_train_sampler(self, train_dataset=None):
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

        def _prepare_dataset(self, dataset, *args, **kwargs):  # already tokenised by llmft's encoders
            return dataset

        def tokenize_row(self, feature, model=None):  # the same, for the older trainers (ORPO)
            return feature

        def training_step(self, model, inputs, *args, **kwargs):
            if "chosen_input_ids" in inputs:  # ORPO: chosen and rejected padded to one width, one forward
                chosen, rejected = inputs["chosen_attention_mask"], inputs["rejected_attention_mask"]
                width = max(chosen.shape[1], rejected.shape[1])
                self.step_tokens.append((int(chosen.sum() + rejected.sum()), 2 * chosen.shape[0] * width,
                                         chosen.shape[0]))
                return super().training_step(model, inputs, *args, **kwargs)
            ids = inputs["input_ids"]
            if "attention_mask" in inputs:
                real = int(inputs["attention_mask"].sum())
                if "KL_input_ids" in inputs:  # KTO's mismatched pairs run as their own forward
                    real += int(inputs["KL_attention_mask"].sum())
                slots = ids.numel() + (inputs["KL_input_ids"].numel() if "KL_input_ids" in inputs else 0)
                rows = ids.shape[0] // rows_per_example
            else:  # padding-free: one row of real tokens
                real = slots = ids.numel()
                rows = int((inputs["position_ids"] == 0).sum()) // rows_per_example
            self.step_tokens.append((real, slots, rows))
            return super().training_step(model, inputs, *args, **kwargs)

    return Counted


def run_trl(cfg, workload: str, setting: str, args: dict, out: Path) -> dict:
    from datasets import Dataset
    from omegaconf import open_dict
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from llmft.models import embedded

    if cfg.peft.name == "qlora":
        raise ValueError("no TRL counterpart wired for QLoRA: the GPU suite measures llmft's QLoRA memory alone")
    with open_dict(cfg):
        cfg.data.packing = False  # the same steps' examples, as TRL reads them: one row each (padding_free flattens)
    windows, view, tokenizer = llmft_windows(cfg, int(args.get("epochs", 1)))
    dataset = Dataset.from_list(trl_rows(windows, view, workload))
    weights_bf16 = setting.startswith("bf16_weights")
    autocast = "bf16_autocast" in setting
    model = AutoModelForCausalLM.from_pretrained(embedded.resolve(cfg.model.name_or_path),
                                                 dtype=torch.bfloat16 if weights_bf16 else torch.float32)
    peft_config = None
    if cfg.peft.name != "full":
        peft_config = LoraConfig(r=cfg.peft.r, lora_alpha=cfg.peft.alpha, lora_dropout=cfg.peft.dropout,
                                 target_modules=cfg.peft.target_modules, task_type="CAUSAL_LM")
    steps = int(cfg.trainer.max_steps)
    common = dict(output_dir=str(out), per_device_train_batch_size=int(cfg.data.batch_size), max_steps=steps,
                  learning_rate=float(cfg.optim.lr), weight_decay=float(cfg.optim.weight_decay),
                  adam_beta1=float(cfg.optim.betas[0]), adam_beta2=float(cfg.optim.betas[1]),
                  adam_epsilon=float(cfg.optim.eps), lr_scheduler_type="constant", max_grad_norm=1.0,
                  logging_steps=1, save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
                  seed=int(cfg.seed), bf16=autocast, dataloader_num_workers=0, disable_tqdm=True,
                  gradient_checkpointing=bool(cfg.model.gradient_checkpointing))
    trainer_cls, config = trl_trainer(workload, common, setting, cfg)
    clock = StepClock()
    trainer = counting(trainer_cls, 2 if view == "pair" else 1)(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                                    peft_config=peft_config, callbacks=[clock])
    trainer.train()
    seconds, counts = clock.seconds(), trainer.step_tokens
    warmup = int(args["warmup"])
    timed, timed_counts = seconds[warmup:], counts[warmup:]
    total = sum(timed)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    real, slots = sum(c[0] for c in timed_counts), sum(c[1] for c in timed_counts)
    return {"tokens_per_s": real / total, "examples_per_s": sum(c[2] for c in timed_counts) / total,
            "median_step_seconds": statistics.median(timed), "padding_fraction": 1 - real / slots,
            "first_loss": losses[0], "mean_loss": statistics.fmean(losses[warmup:]), "steps": len(losses),
            "precision": ("bf16 autocast" if autocast else "fp32 compute") + (", weights bfloat16" if weights_bf16
                                                                              else ", weights float32")}


def trl_trainer(workload: str, common: dict, setting: str, cfg):
    method = cfg.method
    if workload.startswith("sft"):
        from trl import SFTConfig, SFTTrainer

        return SFTTrainer, SFTConfig(**common, padding_free="padding_free" in setting, max_length=None,
                                     dataset_num_proc=None)
    if workload == "dpo_lora":
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer, DPOConfig(**common, beta=float(method.beta), loss_type=["sigmoid"], max_length=None,
                                     padding_free="padding_free" in setting,
                                     precompute_ref_log_probs="precompute_ref" in setting)
    if workload == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer, ORPOConfig(**common, beta=float(method.beta), max_length=None, disable_dropout=True)
    if workload == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOTrainer, KTOConfig(**common, beta=float(method.beta), max_length=None,
                                     desirable_weight=float(method.loss.desirable_weight),
                                     undesirable_weight=float(method.loss.undesirable_weight))
    raise ValueError(f"no TRL counterpart wired for workload {workload}")


def main() -> None:
    side, workload, setting, overrides, args = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), \
        json.loads(sys.argv[5])
    with tempfile.TemporaryDirectory(prefix=f"vs_trl_{side}_") as folder:
        out = Path(folder)
        if side == "llmft":
            result = run_llmft(overrides, out)
        else:
            result = run_trl(compose(overrides, out), workload, setting, args, out)
    if torch.cuda.is_available():  # the whole process, model loading included, on both sides
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)  # what the card holds
    print("RESULT " + json.dumps({**result, "peak_rss_mib": round(peak_rss_mib(), 1)}), flush=True)


if __name__ == "__main__":
    main()
