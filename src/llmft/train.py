"""`python train.py`: build the objects from the config, hand them to Lightning, evaluate before/after."""
from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from llmft import allocator, models, objective, reference_cache, resume, run_card
from llmft.checkpoints import ResumeCheckpoints
from llmft.console import quiet_console
from llmft.data import formats
from llmft.data.cache import TokenCache
from llmft.data.card import data_card
from llmft.data.checks import check_contamination
from llmft.data.datamodule import ViewDataModule
from llmft.data.encoders import encode_rows
from llmft.data.packing import check_packing
from llmft.data.rows import BUNDLED_VIEWS, file_sha256, load_rows, mixture_entry
from llmft.data.sources import SourceSpec
from llmft.data.templates import ChatRenderer
from llmft.evaluate import (Evaluator, PairwiseEvaluator, autocast_dtype, format_table, implicit_reward_accuracy,
                            log_reports, score_margin, suite_rows, write_results)
from llmft.loggers import public_card, public_config, record_run
from llmft.models.forward import runs_padding_free
from llmft.runs import finished_run, lineage
from llmft.throughput import Throughput
from llmft.utils import write_json_atomic

log = logging.getLogger(__name__)

# trainer.* keys that llmft applies itself (manual optimisation) instead of passing to L.Trainer
OWN_TRAINER_KEYS = ("accumulate_grad_batches", "gradient_clip_val")


def trainer_kwargs(trainer_cfg: DictConfig, updates_per_batch: int = 1) -> dict:
    """L.Trainer's arguments from `conf/trainer`. `max_epochs: null` means one epoch, unless
    `max_steps` is set: then the step count alone decides the run's length.

    An online method does `updates_per_batch` optimizer steps per training batch (one rollout each):
    `trainer.max_steps` counts those iterations, so Lightning, whose `max_steps` and `global_step`
    count optimizer steps, gets their product; its validation loop is off (the method evaluates a
    held-out reward itself)."""
    kwargs = {k: v for k, v in OmegaConf.to_container(trainer_cfg).items() if k not in OWN_TRAINER_KEYS}
    if kwargs.get("max_epochs") is None:
        kwargs["max_epochs"] = -1 if (kwargs.get("max_steps") or -1) > 0 else 1
    if updates_per_batch > 1 and (kwargs.get("max_steps") or -1) > 0:
        kwargs["max_steps"] *= updates_per_batch
    return kwargs


def check_factories(optimizer, scheduler) -> None:
    """Build the optimizer and schedule once on a dummy parameter: a bad `optim.*` or `schedule.*`
    value fails now, not after the model has loaded and the base has been evaluated."""
    try:
        dummy = optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))]}])
        if scheduler is not None:
            scheduler(dummy, 10)
    except (TypeError, ValueError) as err:
        raise ValueError(f"optim / schedule config: {err}") from err


def chat_val_examples(datamodule: ViewDataModule, data_spec, renderer: ChatRenderer, seed: int) -> list[dict]:
    """Validation chats for perplexity: the datamodule's own under SFT, else the same rows as chats
    (a preference pair's chosen side)."""
    if datamodule.view == "chat":
        return datamodule.val_examples
    return encode_rows(load_rows(data_spec, "chat", seed).val, renderer)[0]


class OnlineRun:
    """What the orchestration does differently for an online method (PPO, GRPO, RLOO)."""

    def __init__(self, method_cls, options: dict):
        self.prompts = method_cls.prompts_per_iteration(**options)  # the training batch: one rollout's prompts
        self.updates = method_cls.updates_per_iteration(**options)  # optimizer steps per iteration
        self.value_model = method_cls.separate_value_model(**options)  # PPO: values from a second model

    @staticmethod
    def build_reward(reward_cfg: DictConfig, rows, data_spec):
        """The configured reward, checked against every prompt row before the policy loads."""
        try:
            reward = instantiate(reward_cfg)
        except InstantiationException as err:  # say what the reward said, not how hydra called it
            raise (err.__cause__ or err) from None
        source = data_spec.path or ("data.mixture" if data_spec.source == "mixture" else "the bundled suite")
        reward.check_rows(rows.train, f"{source} (training)")
        reward.check_rows(rows.val, f"{data_spec.val_path or source} (validation)")
        return reward


def parent_lineage(init_from: str, model_spec, peft_spec) -> list[Path]:
    """The saved folders `init_from=<run>` starts from (oldest first); the run must have trained the
    same base model. A parent adapter trained on a 4-bit base and loaded on a full-precision one (or the
    reverse) is a slightly different model from the one the parent evaluated: said in the log."""
    parent = finished_run(init_from, key="init_from")
    trained_on = parent.config.model.name_or_path
    if trained_on != model_spec.name_or_path:
        raise ValueError(f"init_from={init_from} trained model.name_or_path={trained_on}, this run has "
                         f"{model_spec.name_or_path}: choose the same model (e.g. model.name_or_path={trained_on})")
    parent_quantize = parent.config.peft.get("quantize")
    if parent.saved.name == "adapter" and parent_quantize != getattr(peft_spec, "quantize", None):
        log.warning("init_from: the parent trained its adapter on a %s base, this run (peft=%s) loads a %s base: "
                    "the starting point (and reference) differs slightly from the parent's evaluated model",
                    parent_quantize or "full-precision", peft_spec.name,
                    getattr(peft_spec, "quantize", None) or "full-precision")
    log.info("init_from: starting from %s (%s)", parent.folder, parent.saved.name)
    return lineage(parent)


def precompute_reference(method, handle, datamodule: ViewDataModule, parents: list[Path], model_spec, peft_spec,
                         precision, device) -> bool:
    """`method.precompute_ref=true`: attach cached (or once-computed) reference log-probs to every example."""
    splits = {"train": datamodule.train_examples, "val": datamodule.val_examples}
    load = {"peft": peft_spec.name, "quantize": getattr(peft_spec, "quantize", None),
            "double_quant": getattr(peft_spec, "double_quant", None),
            "compute_dtype": getattr(peft_spec, "compute_dtype", None), "precision": precision.trainer,
            "weights_dtype": precision.weights_dtype, "revision": model_spec.revision,
            "attn_implementation": model_spec.attn_implementation, "average_logps": method.average_logps}
    key = reference_cache.cache_key(method, handle, parents, load, splits)
    return reference_cache.attach(method, handle, splits, key, reference_cache.cache_folder(method.ref_cache),
                                  datamodule.batch_size, device, autocast_dtype(precision.trainer))


def build_evaluator(cfg: DictConfig, method_cls, handle, renderer: ChatRenderer, datamodule: ViewDataModule):
    """Per method: pairwise accuracy on held-out pairs for a reward model, else the generation suite."""
    eval_spec, data_spec = instantiate(cfg.evaluation), instantiate(cfg.data)
    dtype = autocast_dtype(instantiate(cfg.precision).trainer)
    if method_cls.head == "score":
        return PairwiseEvaluator(renderer, eval_spec, score_margin(handle.head), dtype)
    return Evaluator(renderer, eval_spec, chat_val_examples(datamodule, data_spec, renderer, cfg.seed), dtype)


def task_overrides() -> list[str]:
    """The command line's overrides (empty when the config was not composed by Hydra)."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def slurm_plugins() -> list:
    """Inside a SLURM allocation: Lightning reads it (ranks, nodes) but never requeues; the submitit
    launcher owns the requeue (see llmft.checkpoints). torch uses the CPUs the job was given (unless
    OMP_NUM_THREADS says otherwise), so a job computes the same at any node size."""
    if not SLURMEnvironment.detect():
        return []
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(cpus))
    log.info("SLURM job %s: Lightning reads the allocation, submitit owns the requeue (Lightning's auto-requeue "
             "off); %d torch threads", os.environ.get("SLURM_JOB_ID"), torch.get_num_threads())
    return [SLURMEnvironment(auto_requeue=False)]


def check_data(data_spec, method_cls, data_name: str, method_name: str) -> None:
    """Data that cannot feed the method fails before anything loads: a format with no conversion to the
    method's view, or packing for a method it does not support."""
    if data_spec.source != "tasks":  # a layout decides the format (SourceSpec checks that data.format agrees)
        specs = ([mixture_entry(entry)[0] for entry in data_spec.mixture] if data_spec.source == "mixture"
                 else [SourceSpec.from_data_spec(data_spec)])
        for spec in specs:
            formats.check_conversion(spec.format, method_cls.view, data_name, method_name)
    if data_spec.packing:
        check_packing(method_cls.view, method_cls.head)


def run(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    quiet_console()
    allocator.keep_freed_memory()
    cfg, out, resume_point = resume.resolve(cfg, Path(cfg.paths.output_dir), task_overrides())
    L.seed_everything(cfg.seed, workers=True)

    # Everything that can be wrong with the input fails here, before any training or writing.
    model_spec, peft_spec = instantiate(cfg.model), instantiate(cfg.peft)
    precision, data_spec, eval_spec = instantiate(cfg.precision), instantiate(cfg.data), instantiate(cfg.evaluation)
    method_factory = instantiate(cfg.method)
    method_cls = method_factory.func
    method_cls.check_config(**method_factory.keywords)
    optimizer, scheduler = instantiate(cfg.optim), instantiate(cfg.schedule)
    check_factories(optimizer, scheduler)
    loggers = [instantiate(c) for c in cfg.logger.values()] if cfg.logger else False
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.callbacks else []
    online = OnlineRun(method_cls, method_factory.keywords) if method_cls.generates else None
    objective_name = objective.objective_name(cfg.get("objective"), bool(online))
    if objective_name == "val/exact_match" and method_cls.head == "score":
        raise ValueError("objective=val/exact_match: a reward model generates nothing; use val/loss")
    if objective_name == "val/exact_match" and not cfg.evaluate:
        raise ValueError("objective=val/exact_match: needs evaluate=true (it runs the suite on its validation split)")
    trainer = L.Trainer(**trainer_kwargs(cfg.trainer, online.updates if online else 1), precision=precision.trainer,
                        logger=loggers, callbacks=callbacks, default_root_dir=str(out), plugins=slurm_plugins(),
                        **({"limit_val_batches": 0} if online else {}))
    device = trainer.strategy.root_device  # where training runs, and so where evaluation runs too
    check_data(data_spec, method_cls, HydraConfig.get().runtime.choices.get("data", "data") if HydraConfig.initialized()
               else "data", cfg.method._target_.rsplit(".", 1)[-1].lower())
    rows = load_rows(data_spec, method_cls.view, cfg.seed)
    held_out = {eval_spec.split: suite_rows(eval_spec, BUNDLED_VIEWS[method_cls.view])} if cfg.evaluate else {}
    contamination = check_contamination(data_spec, rows, held_out)
    extra = {}
    if online:
        extra["reward"] = online.build_reward(cfg.reward, rows, data_spec)
    parents = parent_lineage(cfg.init_from, model_spec, peft_spec) if cfg.init_from else []
    separate_values = bool(online and online.value_model)
    handle = models.build(model_spec, peft_spec, precision, with_reference=method_cls.needs_reference,
                          head=None if separate_values else method_cls.head, lineage=parents)
    if separate_values:  # the same starting point, its own adapter (or weights) and value head
        extra["value_handle"] = models.build(model_spec, peft_spec, precision, head="value", lineage=parents)
        log.info("value model: a second %s (%s), %.2fM trainable", model_spec.name_or_path, peft_spec.name,
                 extra["value_handle"].parameter_counts()[0] / 1e6)
    renderer = ChatRenderer(handle.tokenizer, data_spec.max_length, chat_template=data_spec.chat_template)
    batch_size, accumulate = (online.prompts, 1) if online else (data_spec.batch_size, cfg.trainer.accumulate_grad_batches)
    cache = TokenCache(data_spec.cache_dir) if data_spec.cache_dir else None
    datamodule = ViewDataModule(rows, renderer, batch_size, accumulate, cfg.seed, data_spec.num_workers,
                                view=method_cls.view, cache=cache, max_dropped_fraction=data_spec.max_dropped_fraction,
                                packing=data_spec.packing)
    datamodule.setup("fit")
    data_summary = data_card(data_spec, rows, {"train": len(datamodule.train_examples), "val": len(datamodule.val_examples)},
                             datamodule.dropped, renderer.template_hash, cache.stats if cache else None, contamination,
                             datamodule.padding_fractions(runs_padding_free(handle.model)))
    # the input is valid: the run folder gets its first files
    if resume_point is None:
        resume.save_run_config(cfg, out)
    else:
        resume.cut_metrics(out, resume_point.log_step)  # before a logger opens metrics.csv
    write_json_atomic(out / "data_card.json", data_summary)
    for logger in trainer.loggers:
        logger.log_hyperparams(public_config(cfg))  # secrets redacted
    if trainer.fit_loop.max_epochs == -1 and trainer.max_steps > 0:  # as many epochs as max_steps needs (a finite bar)
        batches = trainer.max_steps // (online.updates if online else 1)
        trainer.fit_loop.max_epochs = -(-batches // datamodule.windows_per_epoch)
    trainable, total = handle.parameter_counts()
    log.info("parameters: %.2fM trainable of %.1fM (%.2f%%)", trainable / 1e6, total / 1e6, 100 * trainable / total)

    evaluator = build_evaluator(cfg, method_cls, handle, renderer, datamodule) if cfg.evaluate else None
    reports, records = {}, {}
    if evaluator is not None and eval_spec.base and method_cls.head != "score":  # a fresh score head ranks at chance
        saved_base = resume.load_base_eval(out) if resume_point else None
        if saved_base:
            reports["base"], records["base"] = saved_base
        else:
            handle.place(device)
            with handle.initial() as base:
                reports["base"], records["base"] = evaluator(base, "base")
            resume.save_base_eval(out, reports["base"], records["base"])

    method = method_factory(handle=handle, optimizer=optimizer, scheduler=scheduler,
                            gradient_clip_val=cfg.trainer.gradient_clip_val, **extra)
    if getattr(method, "precompute_ref", False):
        precompute_reference(method, handle, datamodule, parents, model_spec, peft_spec, precision, device)
    fit_started = time.perf_counter()
    with warnings.catch_warnings():
        # Lightning cannot see that the datamodule restores the position in the epoch (llmft.data.datamodule)
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
        trainer.fit(method, datamodule=datamodule, ckpt_path=resume_point.checkpoint if resume_point else None,
                    weights_only=False)
    fit_seconds = time.perf_counter() - fit_started
    checkpointer = next((c for c in callbacks if isinstance(c, ResumeCheckpoints)), None)
    clock = next((c for c in callbacks if isinstance(c, Throughput)), None)
    if checkpointer is not None and checkpointer.preempted:
        checkpointer.hand_over()  # submitit requeues the job; the requeued one resumes this folder
    saved = handle.save(out / "checkpoints")
    log.info("saved %s", saved)
    if separate_values:
        log.info("saved the value model in %s", extra["value_handle"].save(out / "checkpoints" / "value_model"))
    objective_value = objective.after_training(objective_name, trainer, method, datamodule)

    if evaluator is not None:
        handle.place(device)  # Lightning's teardown moved the module to the CPU
        with handle.merged() as tuned:
            reports["tuned"], records["tuned"] = evaluator(tuned, "tuned")
            if objective_name == "val/exact_match":
                objective_value = objective.validation_exact_match(evaluator, tuned)
                for logger in trainer.loggers:  # a metric like the others (W&B report panels plot it)
                    logger.log_metrics({objective_name: objective_value}, step=trainer.global_step)
        if method_cls.view == "pair" and method_cls.needs_reference:  # DPO family: its implicit reward
            reports["tuned"]["pairwise_accuracy"] = implicit_reward_accuracy(
                handle.model, handle.reference, renderer, eval_spec, autocast_dtype(precision.trainer))
        if online and method.heldout and "base" in reports:  # the held-out reward at the start and at the end (DESIGN: eval.json)
            reports["base"]["reward"], reports["tuned"]["reward"] = method.heldout[0]["reward"], method.heldout[-1]["reward"]
        write_results(out, reports, records)
        step = trainer.global_step // online.updates if online else trainer.global_step  # the x axis of train/*
        log_reports(trainer.loggers, reports, step, records)
        print("\n" + format_table(reports) + "\n", flush=True)

    card = {
        "command": run_card.command_line("train.py"),
        "git": run_card.git_state(Path(__file__).resolve().parent),
        "seed": cfg.seed,
        "model": model_spec.name_or_path,
        "base_model": handle.base.card(),
        "peft": peft_spec.name,
        "method": cfg.method._target_,
        "init_from": run_card.portable_path(cfg.init_from) if cfg.init_from else None,
        "precision": precision.trainer,
        "torch": run_card.torch_settings(),
        "chat_template_sha256": renderer.template_hash,
        "data_files": {run_card.portable_path(p): file_sha256(p) for p in rows.files},
        "examples": data_summary["examples"],
        "dropped": data_summary["dropped"],
        "tokenisation_cache": (data_summary["tokenisation_cache"] or {}).get("outcome", "off"),
        "padding_fraction": data_summary["padding_fraction"],
        "data_card": "data_card.json",
        "parameters": {"trainable": trainable, "total": total},
        "optimizer_steps": trainer.global_step,
        "startup_seconds": round(fit_started - started, 1),  # config to the first step: loading, data, base evaluation
        "fit_seconds": round(fit_seconds, 1),
        "throughput": clock.summary() if clock else None,
        "total_seconds": round(time.perf_counter() - started, 1),
        "peak_memory": run_card.peak_memory(),
        "packages": run_card.package_versions(),
        "saved": str(saved.relative_to(out)),
        **({"heldout_reward": method.heldout} if online else {}),
        "objective": objective.card_entry(objective_name, objective_value),
        "eval": {name: next(r[k]["overall"] for k in ("exact_match", "pairwise_accuracy") if k in r)
                 for name, r in reports.items()},
    }
    write_json_atomic(out / "run_card.json", public_card(card))  # secrets redacted, the command line's too
    log.info("objective %s = %s (validation)", objective_name, objective_value)
    record_run(trainer.loggers, card, reports)  # the last logging call: it finishes a W&B run
    log.info("run folder: %s", out)
    return {"reports": reports, "card": card, "handle": handle, "objective": objective_value}
