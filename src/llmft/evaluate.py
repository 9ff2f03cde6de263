"""Evaluation on the bundled task suite: exact match per task (batched greedy generation) and
perplexity of the validation split. `eval.py` runs it on a finished run or a bare model; `train.py`
runs it before and after training."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from omegaconf import DictConfig, OmegaConf
from hydra.utils import get_class, instantiate

from llmft.data import tasks
from llmft.data.collate import pad_batch
from llmft.data.templates import ChatRenderer, check_template_lock
from llmft.metrics.exact_match import exact_match_by_task
from llmft.metrics.perplexity import perplexity
from llmft.models.decoding import generate_greedy
from llmft.models.forward import eval_mode
from llmft.utils import write_json_atomic

log = logging.getLogger(__name__)
PPL_BATCH = 8  # perplexity batches: small, since each holds [batch, positions, vocabulary] logits


@dataclass
class EvalSpec:
    """`conf/evaluation/*.yaml`."""

    split: str = "test"
    tasks: list[str] | None = None  # None = every task of the suite
    limit: int | None = None  # at most N examples per task
    batch_size: int = 64  # prompts per generation batch (one batch per task of the suite)
    max_new_tokens: int = 64  # cap; each task has its own smaller budget (tasks.MAX_NEW_TOKENS)
    base: bool = True  # train.py: also evaluate the model before training, for the comparison table
    implicit_reward_limit: int | None = 20  # DPO family: held-out pairs per task for the implicit reward's accuracy


def suite_rows(spec: EvalSpec, view: str = "chat", limit: int | None = None) -> list[dict]:
    """The suite's rows of `view` for the evaluated split and tasks, at most `spec.limit` per task
    (and at most `limit`, where given)."""
    limit = min((n for n in (spec.limit, limit) if n is not None), default=None)
    rows = tasks.load_bundled(view, spec.split)
    wanted = spec.tasks or list(tasks.TASK_NAMES)
    unknown = sorted(set(wanted) - set(tasks.TASK_NAMES))
    if unknown:
        raise ValueError(f"evaluation.tasks: unknown {unknown}; the suite has {list(tasks.TASK_NAMES)}")
    kept, seen = [], {t: 0 for t in wanted}
    for row in rows:
        if row["task"] in seen and (limit is None or seen[row["task"]] < limit):
            seen[row["task"]] += 1
            kept.append(row)
    return kept


class Evaluator:
    """Scores one model on fixed rows: the same prompts and validation batches for base and tuned."""

    def __init__(self, renderer: ChatRenderer, spec: EvalSpec, val_examples: list[dict], autocast_dtype=None):
        self.renderer = renderer
        self.spec = spec
        self.rows = suite_rows(spec)
        self.prompts = [renderer.prompt_text(r["messages"], r.get("tools")) for r in self.rows]
        by_length = sorted(val_examples, key=lambda e: len(e["input_ids"]))  # little padding
        self.val_batches = [pad_batch(by_length[i : i + PPL_BATCH], renderer.tokenizer.pad_token_id)
                            for i in range(0, len(by_length), PPL_BATCH)]
        self.autocast_dtype = autocast_dtype

    def __call__(self, model: torch.nn.Module, name: str) -> tuple[dict, list[dict]]:
        predictions = [""] * len(self.rows)
        for task in dict.fromkeys(r["task"] for r in self.rows):
            idx = [i for i, r in enumerate(self.rows) if r["task"] == task]
            budget = min(self.spec.max_new_tokens, tasks.MAX_NEW_TOKENS[task])
            outputs = generate_greedy(model, self.renderer.tokenizer, [self.prompts[i] for i in idx], budget,
                                      self.spec.batch_size, self.autocast_dtype, desc=f"eval {name} {task}")
            for i, output in zip(idx, outputs):
                predictions[i] = output
        records = [
            {"id": r["id"], "task": r["task"], "prediction": p, "answer": r["answer"],
             "correct": tasks.verify(r["task"], p, r["answer"])}
            for r, p in zip(self.rows, predictions)
        ]
        report = {"exact_match": exact_match_by_task([r["task"] for r in records], [r["correct"] for r in records]),
                  "n_examples": len(records)}
        if self.val_batches:
            report["perplexity"] = perplexity(model, self.val_batches, self.autocast_dtype)
        return report, records


Margin = Callable[[torch.nn.Module, dict], torch.Tensor]  # (model, batch of pairs) -> [B] chosen-minus-rejected


class PairwiseEvaluator:
    """Pairwise accuracy on the suite's held-out preference pairs: the fraction, per task, where the
    chosen answer gets the higher score. The score is a reward model's head (`score_margin`) or
    DPO's implicit reward, the policy-vs-reference log-ratio (`implicit_reward_margin`)."""

    metric = "pairwise_accuracy"

    def __init__(self, renderer: ChatRenderer, spec: EvalSpec, margin: Margin, autocast_dtype=None,
                 limit: int | None = None):
        from llmft.data.encoders import encode_pair

        self.margin = margin
        self.autocast_dtype = autocast_dtype
        encoded = [(row, encode_pair(row, renderer)) for row in suite_rows(spec, "preference", limit)]
        self.examples = [(row, ex) for row, ex in encoded if isinstance(ex, dict)]
        self.batches = [pad_batch([ex for _, ex in self.examples[i : i + PPL_BATCH]], renderer.tokenizer.pad_token_id)
                        for i in range(0, len(self.examples), PPL_BATCH)]

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, name: str) -> tuple[dict, list[dict]]:
        device = next(model.parameters()).device
        margins = []
        with eval_mode(model):
            for batch in tqdm(self.batches, desc=f"pairs {name}", unit="batch"):
                batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
                with torch.autocast(device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                    margins += self.margin(model, batch).float().tolist()
        records = [{"id": row["id"], "task": row["task"], "margin": m, "correct": m > 0}
                   for (row, _), m in zip(self.examples, margins)]
        report = {self.metric: exact_match_by_task([r["task"] for r in records], [r["correct"] for r in records]),
                  "n_examples": len(records)}
        return report, records


def score_margin(head: torch.nn.Module) -> Margin:
    """A reward model's margin: score(chosen) - score(rejected)."""
    from llmft.models.forward import pair_scores

    def margin(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        chosen, rejected = pair_scores(model, head, batch).chunk(2)
        return chosen - rejected
    return margin


def implicit_reward_margin(reference: Callable) -> Margin:
    """DPO's implicit reward margin (up to the factor beta > 0, which keeps its sign):
    (log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))."""
    from llmft.models.forward import pair_logp_sums

    def margin(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        policy_c, policy_r = pair_logp_sums(model, batch)[0].chunk(2)
        with reference() as ref:
            ref_c, ref_r = pair_logp_sums(ref, batch)[0].chunk(2)
        return (policy_c - ref_c) - (policy_r - ref_r)
    return margin


def implicit_reward_accuracy(policy: torch.nn.Module, reference: Callable, renderer: ChatRenderer, spec: EvalSpec,
                             autocast_dtype=None) -> dict[str, float]:
    """DPO family: pairwise accuracy of the implicit reward on `spec.implicit_reward_limit` held-out pairs a
    task (a policy and a reference forward each, so it is capped: 20 a task costs about as much as the
    generation suite on 2 CPU cores)."""
    evaluator = PairwiseEvaluator(renderer, spec, implicit_reward_margin(reference), autocast_dtype,
                                  limit=spec.implicit_reward_limit)
    return evaluator(policy, "tuned")[0]["pairwise_accuracy"]


SAMPLES_PER_TASK = 2  # generations shown per task and model in the loggers' sample table


def log_reports(loggers: list, reports: dict[str, dict], step: int, records: dict[str, list[dict]] | None = None) -> None:
    """Evaluation results to the run's loggers (W&B, CSV) as `eval/<model>/<metric>/<task>` and
    `eval/<model>/perplexity` (`eval/`: the evaluation split, never `val/`), and a few generations per
    task as a table (`eval/samples`) to loggers that take tables (W&B)."""
    samples = [[name, r["task"], r["id"], r["prediction"], r["answer"], r["correct"]]
               for name, recs in (records or {}).items()
               for task in dict.fromkeys(x["task"] for x in recs)
               for r in [x for x in recs if x["task"] == task and "prediction" in x][:SAMPLES_PER_TASK]]
    for logger in loggers:
        if samples and hasattr(logger, "log_text"):
            logger.log_text(key="eval/samples", columns=["model", "task", "id", "prediction", "answer", "correct"],
                            data=samples, step=step)
    flat = {}
    for name, report in reports.items():
        for metric in ("exact_match", "pairwise_accuracy"):
            flat.update({f"eval/{name}/{metric}/{task}": value for task, value in report.get(metric, {}).items()})
        if "perplexity" in report:
            flat[f"eval/{name}/perplexity"] = report["perplexity"]
    for logger in loggers:
        logger.log_metrics(flat, step=step)
        logger.save()


def format_table(reports: dict[str, dict]) -> str:
    """Exact match (or pairwise accuracy) per task in percent, one column per model, plus perplexity."""
    names = list(reports)
    metric = "exact_match" if "exact_match" in next(iter(reports.values())) else "pairwise_accuracy"
    keys = list(next(iter(reports.values()))[metric])
    keys = [k for k in keys if k != "overall"] + ["overall"]
    title = metric.replace("_", " ") + " (%)"
    width = max(18, len(title) + 2)
    lines = [f"{title:<{width}}" + "".join(f"{n:>10}" for n in names)]
    if len(names) == 2:
        lines[0] += f"{'delta':>10}"
    for key in keys:
        values = [reports[n][metric][key] * 100 for n in names]
        line = f"{key:<{width}}" + "".join(f"{v:>10.1f}" for v in values)
        if len(values) == 2:
            line += f"{values[1] - values[0]:>+10.1f}"
        lines.append(line)
    if all("perplexity" in r for r in reports.values()):
        lines.append(f"{'val perplexity':<{width}}" + "".join(f"{reports[n]['perplexity']:>10.3f}" for n in names))
    return "\n".join(lines)


def write_results(out_dir: Path, reports: dict[str, dict], records: dict[str, list[dict]]) -> None:
    write_json_atomic(out_dir / "eval.json", reports)
    lines = [json.dumps({"model": name, **rec}, ensure_ascii=False) for name, recs in records.items() for rec in recs]
    (out_dir / "eval_predictions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(cfg: DictConfig) -> dict:
    """`python eval.py run_dir=...` (base vs tuned) or `python eval.py model=...` (one model).

    Results go to this evaluation's own folder (`paths.output_dir`), never into `run_dir`: the
    run's `eval.json` stays the one its run card describes.
    """
    from llmft import run_card
    from llmft.console import quiet_console
    from llmft.data.encoders import encode_rows
    from llmft.data.rows import load_rows
    from llmft.runs import finished_run, lineage

    quiet_console()
    spec: EvalSpec = instantiate(cfg.evaluation)
    out_dir = Path(cfg.paths.output_dir)
    ancestors: list[Path] = []
    evaluated = None
    if cfg.run_dir:
        evaluated = finished_run(cfg.run_dir)
        train_cfg, (*ancestors, saved) = evaluated.config, lineage(evaluated)
    else:
        train_cfg, saved = cfg, None
    model_spec, peft_spec = instantiate(train_cfg.model), instantiate(train_cfg.peft)
    precision, data_spec = instantiate(train_cfg.precision), instantiate(train_cfg.data)
    method_cls = get_class(train_cfg.method._target_) if cfg.run_dir else None
    # a value head plays no part in evaluation (and a run with a separate value model has none by the policy)
    head = "score" if getattr(method_cls, "head", None) == "score" else None
    rows = load_rows(data_spec, "chat", train_cfg.seed)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = autocast_dtype(precision.trainer)
    tokenizer, contexts, tuned = models_to_score(model_spec, peft_spec, precision, saved, device, ancestors, head)
    option = "chat_template" if cfg.get("chat_template") is not None else "data.chat_template"
    renderer = ChatRenderer(tokenizer, data_spec.max_length, eval_template(cfg, data_spec, evaluated), option)
    template = (check_template_lock(run_template_hash(evaluated), renderer.template_hash, cfg.run_dir,
                                    cfg.get("force_template", False))
                if cfg.run_dir else {"sha256": renderer.template_hash})
    if template.get("forced"):
        log.warning("force_template=true: evaluating run %s (trained with chat template %s) with template %s",
                    cfg.run_dir, template["run_sha256"], template["sha256"])
    if head == "score":  # a reward model: pairwise accuracy of its trained head (the base has none)
        evaluator, contexts = PairwiseEvaluator(renderer, spec, score_margin(tuned.head), dtype), {"tuned": tuned.merged}
    else:
        evaluator = Evaluator(renderer, spec, encode_rows(rows.val, renderer)[0], dtype)
    reports, records = {}, {}
    for name, context in contexts.items():
        with context() as model:
            reports[name], records[name] = evaluator(model, name)
    if method_cls is not None and method_cls.view == "pair" and method_cls.needs_reference:  # DPO family
        reference = tuned.reference if tuned.is_peft else contexts["base"]
        reports["tuned"]["pairwise_accuracy"] = implicit_reward_accuracy(tuned.model, reference, renderer, spec, dtype)
    write_results(out_dir, reports, records)
    write_json_atomic(out_dir / "eval_card.json", {
        "command": run_card.command_line("eval.py"),
        "run_dir": run_card.portable_path(cfg.run_dir) if cfg.run_dir else None,
        "model": model_spec.name_or_path,
        "evaluation": OmegaConf.to_container(cfg.evaluation),
        "device": str(device),
        "chat_template": template,
        "git": run_card.git_state(Path(__file__).resolve().parent),
    })
    print(format_table(reports))
    log.info("wrote %s", out_dir / "eval.json")
    return reports


def eval_template(cfg: DictConfig, data_spec, evaluated) -> str | None:
    """The chat template to render with: `chat_template=` of eval.py, else the run's (or, for a bare model,
    the eval config's) `data.chat_template`. A run's relative .jinja path is relative to where it was launched."""
    override = cfg.get("chat_template")
    if override is not None:
        return override
    return evaluated.chat_template() if evaluated is not None else data_spec.chat_template


def run_template_hash(evaluated) -> str | None:
    """The run card's `chat_template_sha256` (None for a bare model or a run card without one)."""
    if evaluated is None:
        return None
    card = json.loads((evaluated.folder / "run_card.json").read_text(encoding="utf-8"))
    return card.get("chat_template_sha256")


def models_to_score(model_spec, peft_spec, precision, saved: Path | None, device: torch.device,
                    ancestors: list[Path] = (), head: str | None = None) -> tuple[object, dict[str, Callable], object]:
    """(tokenizer, {name: context manager factory yielding the model}, the run's handle or None) for the
    base model and, for a run, the fine-tuned one (with its saved head), placed on `device`. A PEFT run is loaded once: its base is the same
    module with the adapter disabled (on the same 4-bit base for QLoRA): the model it started from,
    which for a run started `init_from=` another is that parent (`ancestors`, merged in)."""
    from llmft import models

    tuned = (models.load_finished(saved, model_spec, peft_spec, precision, ancestors, head)
             if saved is not None else None)
    if tuned is not None and tuned.is_peft:
        tuned.place(device)
        return tuned.tokenizer, {"base": tuned.initial, "tuned": tuned.merged}, tuned
    base = models.build(model_spec, models.FullSpec(), precision, lineage=ancestors)  # the run's starting point
    base.place(device)
    if tuned is None:
        return base.tokenizer, {"base": base.merged}, None
    tuned.place(device)
    return base.tokenizer, {"base": base.merged, "tuned": tuned.merged}, tuned


def autocast_dtype(trainer_precision: str) -> torch.dtype | None:
    """Evaluate in the precision the run trained in (bf16-mixed -> bf16 autocast)."""
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(trainer_precision)
