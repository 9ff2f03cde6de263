"""What PPO, GRPO and RLOO share: each training batch is one *iteration* on the `prompt` view.

    rollout   sample `group_size` responses per prompt from the current policy (dropout off,
              left-padded prompts, temperature / top-p, stop at the end-of-turn token)
    score     the reward function on the decoded responses (+ `stop_penalty` for responses that
              never stop), then the reference's (and, when needed, the policy's) log-probs and
              values in the same forward layout the loss uses (`models.forward.response_forward`)
    advantages (the subclass: GAE for PPO, group-normalised for GRPO, leave-one-out for RLOO)
    update    `epochs` passes over the rollout, each cut into `minibatches` optimizer steps; a
              minibatch's loss is summed over micro-batches of `micro_batch_size` responses and
              normalised once (`llmft.losses.aggregate`: per token or per sequence)

`trainer.max_steps` counts iterations: the orchestration gives Lightning iterations x
`updates_per_iteration` optimizer steps, so Lightning's `global_step` and the learning-rate schedule
count optimizer steps (`train/optimizer_steps`). Metrics are logged once per iteration (TRL's GRPO
names: `reward`, `reward_std`, `kl`, `entropy`, `clip_ratio`, `completions/mean_length`, plus
`completions/stopped`, `approx_kl`, `reward/<task>`).

Held-out reward: at the start, middle and end of the run the policy answers every validation
prompt `heldout_samples` times at `heldout_temperature` (default: the training temperature, so the
figure is the objective the method maximises, on prompts it never trained on; 0 = greedy, the
protocol of the test exact match), drawn with a fixed seed and the training RNG untouched, so the
three evaluations share their random numbers. It logs `val/reward`, `val/reward/<task>`,
`val/completions/*`, with a few responses per task appended to `samples.csv` in the run folder (and
a W&B table); from the middle on, `change`: the mean difference from the start, paired by prompt
(the mean of its draws), with a 95% interval.
"""
from __future__ import annotations

import csv
import inspect
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from llmft.losses import aggregate, kl_penalty
from llmft.losses.rl import AGGREGATIONS, KL_KINDS
from llmft.methods.base import Metrics, ObjectiveModule, _accumulate
from llmft.methods.rollout import Rollout
from llmft.metrics.paired import paired_difference
from llmft.models.factory import end_of_turn_ids
from llmft.models.forward import eval_mode, response_forward
from llmft.models.sampling import SamplingSpec, sample
from llmft.utils import keep_csv_rows

log = logging.getLogger(__name__)
SAMPLES_PER_TASK = 2  # responses per task written to samples.csv at each held-out evaluation
HELDOUT_BATCH = 128  # held-out prompts per generate call: one call for the suite's 80 (fewer sequential steps)
HELDOUT_SEED = 1234  # the held-out draws use their own seed, so every evaluation sees the same noise


class OnlineObjective(ObjectiveModule):
    view = "prompt"
    needs_reference = True
    generates = True
    uses_old_logps = False  # True: always score the rollout with the policy (PPO's values come with them)

    def __init__(self, handle, optimizer, reward, scheduler=None, gradient_clip_val: float | None = 1.0,
                 disable_dropout: bool = True, sampling: dict | SamplingSpec | None = None, rollout_size: int = 32,
                 group_size: int = 1, epochs: int = 1, minibatches: int = 1, micro_batch_size: int = 16,
                 kl_coef: float = 0.05, kl_estimator: str = "k3", loss_aggregation: str = "token",
                 clip_eps: float = 0.2, stop_penalty: float | None = None, heldout_samples: int = 1,
                 heldout_temperature: float | None = None):
        super().__init__(handle, optimizer, scheduler, gradient_clip_val, disable_dropout)
        self.check_config(rollout_size=rollout_size, group_size=group_size, epochs=epochs, minibatches=minibatches,
                          micro_batch_size=micro_batch_size, kl_coef=kl_coef, kl_estimator=kl_estimator,
                          loss_aggregation=loss_aggregation, clip_eps=clip_eps, heldout_samples=heldout_samples,
                          heldout_temperature=heldout_temperature)
        self.reward = reward
        self.sampling = sampling if isinstance(sampling, SamplingSpec) else SamplingSpec(**(sampling or {}))
        self.rollout_size, self.group_size = rollout_size, group_size
        self.epochs, self.minibatches, self.micro_batch_size = epochs, minibatches, micro_batch_size
        self.kl_coef, self.kl_estimator = kl_coef, kl_estimator
        self.loss_aggregation, self.clip_eps = loss_aggregation, clip_eps
        self.stop_penalty, self.heldout_samples = stop_penalty, heldout_samples
        self.heldout_temperature = heldout_temperature
        self.stop_ids = sorted(end_of_turn_ids(handle.tokenizer))
        self.heldout: list[dict] = []  # [{"iteration": i, "reward": {"mean": x, task: x}, ...}]
        self._update_metrics: set[str] = set()  # names the update has logged (NaN when an update skips them)
        self._heldout_scores: list[list[float]] = []  # per validation prompt (mean of its draws), for `change`

    # -- configuration -------------------------------------------------------------------------
    @classmethod
    def options(cls, **options: Any) -> dict[str, Any]:
        """The method's options with the defaults filled in (a subclass's default wins over its base's)."""
        defaults: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if "__init__" in vars(klass) and issubclass(klass, OnlineObjective):
                defaults.update({name: p.default for name, p in inspect.signature(klass.__init__).parameters.items()
                                 if p.default is not inspect.Parameter.empty})
        return {**defaults, **options}

    @classmethod
    def check_config(cls, **options: Any) -> None:
        unknown = sorted(set(options) - set(cls.options()) - {"handle", "optimizer", "reward"})
        if unknown:
            raise ValueError(f"method {cls.__name__}: unknown option(s) {unknown} (see conf/method/ for its options)")
        o = cls.options(**options)
        if o["group_size"] < 1:
            raise ValueError(f"method.group_size={o['group_size']}: must be at least 1")
        if o["rollout_size"] < 1 or o["rollout_size"] % o["group_size"]:
            raise ValueError(f"method.rollout_size={o['rollout_size']} is not a multiple of method.group_size="
                             f"{o['group_size']} (a rollout is whole groups of responses to the same prompt)")
        for name in ("epochs", "minibatches", "micro_batch_size", "heldout_samples"):
            if o[name] < 1:
                raise ValueError(f"method.{name}={o[name]}: must be at least 1")
        if o["rollout_size"] % o["minibatches"]:
            raise ValueError(f"method.rollout_size={o['rollout_size']} does not split into method.minibatches="
                             f"{o['minibatches']} equal minibatches")
        if o["heldout_temperature"] is not None and o["heldout_temperature"] < 0:
            raise ValueError(f"method.heldout_temperature={o['heldout_temperature']}: must be >= 0 (0 = greedy)")
        if o["heldout_temperature"] == 0 and o["heldout_samples"] > 1:
            raise ValueError(f"method.heldout_samples={o['heldout_samples']} with method.heldout_temperature=0: greedy "
                             "answers are all the same; set heldout_temperature > 0 to sample several")
        if o["kl_estimator"] not in KL_KINDS:
            raise ValueError(f"method.kl_estimator={o['kl_estimator']!r}: choose one of {list(KL_KINDS)}")
        if o["kl_coef"] < 0:
            raise ValueError(f"method.kl_coef={o['kl_coef']}: must be >= 0")
        if o["loss_aggregation"] not in AGGREGATIONS:
            raise ValueError(f"method.loss_aggregation={o['loss_aggregation']!r}: choose one of {list(AGGREGATIONS)}")
        if not 0 < o["clip_eps"] < 1:
            raise ValueError(f"method.clip_eps={o['clip_eps']}: must be in (0, 1)")

    @classmethod
    def separate_value_model(cls, **options: Any) -> bool:
        """Whether the orchestration builds a second model for the values (PPO's `value_model`)."""
        return False

    @classmethod
    def prompts_per_iteration(cls, **options: Any) -> int:
        o = cls.options(**options)
        return o["rollout_size"] // o["group_size"]

    @classmethod
    def updates_per_iteration(cls, **options: Any) -> int:
        """Optimizer steps per training batch (iteration)."""
        o = cls.options(**options)
        return o["epochs"] * o["minibatches"]

    @property
    def iterations(self) -> int:
        """Iterations this run will do: `trainer.max_steps` (Lightning's counts optimizer steps, so divided
        by the updates per iteration) or the epochs' batches, whichever ends the run first."""
        trainer = self.trainer
        trainer.estimated_stepping_batches  # loads the training data: configure_optimizers runs before that
        by_steps = trainer.max_steps // self.updates_per_iteration(**self._own_options()) if trainer.max_steps > 0 else None
        by_epochs = trainer.num_training_batches * trainer.max_epochs if trainer.max_epochs > 0 else None
        return min(n for n in (by_steps, by_epochs) if n is not None)

    def total_optimizer_steps(self) -> int:
        return self.iterations * self.updates_per_iteration(**self._own_options())

    def _own_options(self) -> dict[str, int]:
        return {"epochs": self.epochs, "minibatches": self.minibatches}

    # -- what a subclass provides ----------------------------------------------------------------
    def compute_advantages(self, rollout: Rollout) -> dict[str, float]:
        """Fill rollout.advantages (and returns); return extra metrics of the rollout."""
        raise NotImplementedError

    def update_loss(self, part: Rollout) -> tuple[torch.Tensor, Metrics]:
        """(loss sum, metrics) of one micro-batch; its count is `self.count(part)`."""
        raise NotImplementedError

    def learning_rows(self, rollout: Rollout) -> Rollout:
        """The responses the update learns from (all of them here; GRPO and RLOO may skip uniform groups)."""
        return rollout

    # -- the iteration ---------------------------------------------------------------------------
    def training_step(self, window: list[dict], batch_idx: int) -> torch.Tensor:
        self.model.train()
        iteration = self.global_step // self.updates_per_iteration(**self._own_options())
        if iteration == 0 and not self.heldout:
            self.evaluate_heldout(0)
        prompts, meta = _prompts(window)
        started = time.perf_counter()
        rollout = self.make_rollout(prompts, meta)
        scored = time.perf_counter()
        metrics = self.rollout_metrics(rollout)
        self.log_task_rewards(rollout, iteration)
        metrics.update(self.compute_advantages(rollout))
        sums, loss = self.update(self.learning_rows(rollout))
        metrics.update({"perf/rollout_s": scored - started, "perf/update_s": time.perf_counter() - scored})
        for name, value in metrics.items():
            self.log(name if name.startswith("perf/") else f"train/{name}", value, on_step=True, on_epoch=False)
        for name, (value, count) in sums.items():
            self.log(f"train/{name}", value / max(count, 1.0), on_step=True, on_epoch=False)
        for name in self._update_metrics - sums.keys():  # an update with nothing to learn from measured nothing
            self.log(f"train/{name}", float("nan"), on_step=True, on_epoch=False)
        self._update_metrics |= sums.keys()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/optimizer_steps", float(self.global_step), on_step=True, on_epoch=False)
        done = iteration + 1
        if done in {max(self.iterations // 2, 1), self.iterations}:
            self.evaluate_heldout(done)
        return loss

    def make_rollout(self, prompts: list[list[int]], meta: list[dict]) -> Rollout:
        """Sample, decode, score; then reference (and old) log-probs and values in the loss's layout."""
        repeated = [p for p in prompts for _ in range(self.group_size)]
        meta = [m for m in meta for _ in range(self.group_size)]
        samples = self.generate(repeated)
        completions = self.decode(samples.sequences[:, samples.prompt_width:], samples.response_mask[:, samples.prompt_width:])
        scores = torch.tensor(self.reward(completions, meta), dtype=torch.float32, device=self.device)
        rollout = Rollout(samples.sequences, samples.attention_mask, samples.response_mask[:, samples.prompt_width:],
                          samples.prompt_width, samples.stopped.to(self.device), scores,
                          self.shape_rewards(scores, samples.stopped.to(self.device)), meta, completions)
        self.score_tokens(rollout)
        return rollout

    def generate(self, prompts: list[list[int]], spec: SamplingSpec | None = None, greedy: bool = False):
        """Sample from the policy with its LoRA deltas merged into the base weights (`ModelHandle.merged`:
        the originals are restored bit-exactly after): 0.83x the time of sampling through the active
        adapter for 64 responses on the 2-core CPU (`benchmarks/rollout_generation.py`)."""
        with self.handle.merged() as model:
            return sample(model, prompts, self.handle.tokenizer.pad_token_id, self.stop_ids, spec or self.sampling,
                          greedy=greedy)

    def decode(self, responses: torch.Tensor, mask: torch.Tensor) -> list[str]:
        tokenizer = self.handle.tokenizer
        return [tokenizer.decode(row[m.bool()], skip_special_tokens=True).strip() for row, m in zip(responses, mask)]

    def shape_rewards(self, scores: torch.Tensor, stopped: torch.Tensor) -> torch.Tensor:
        """The reward the method optimises: the score, minus `stop_penalty` where the response never stopped."""
        rewards = scores.clone()
        if self.stop_penalty is not None:
            rewards[~stopped] -= self.stop_penalty
        return rewards

    @torch.no_grad()
    def score_tokens(self, rollout: Rollout) -> None:
        """Reference log-probs (always: the KL is logged), and old log-probs and values where the update
        needs them (several updates per rollout, or PPO), micro-batch by micro-batch."""
        needs_old = self.uses_old_logps or self.updates_per_iteration(**self._own_options()) > 1
        ref, old, values = [], [], []
        for rows in self._chunks(len(rollout)):
            seq, att = rollout.sequences[rows], rollout.attention_mask[rows]
            with self.reference() as reference:
                ref.append(response_forward(reference, seq, att, rollout.prompt_width,
                                            temperature=self.sampling.temperature)[0])
            if needs_old:
                with eval_mode(self.model):
                    logps, value, _ = self.policy_forward(seq, att, rollout.prompt_width)
                old.append(logps)
                if value is not None:
                    values.append(value)
        rollout.ref_logps = torch.cat(ref)
        rollout.old_logps = torch.cat(old) if old else None
        rollout.values = torch.cat(values) if values else None

    def policy_forward(self, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                       with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(log-probs, values or None, entropy or None) of the responses under the policy, in the loss's
        layout (`response_forward`); the values come from the value head where the method has one."""
        return response_forward(self.model, sequences, attention_mask, prompt_width,
                                getattr(self, "scalar_head", None), with_entropy=with_entropy,
                                temperature=self.sampling.temperature)

    def rollout_metrics(self, rollout: Rollout) -> dict[str, float]:
        mask = rollout.response_mask.float()
        metrics = {"reward": rollout.rewards.mean().item(),
                   "reward_std": rollout.rewards.std().item() if len(rollout) > 1 else 0.0,
                   "score": rollout.scores.mean().item(),
                   "completions/mean_length": mask.sum(-1).mean().item(),
                   "completions/stopped": rollout.stopped.float().mean().item()}
        return metrics

    def log_task_rewards(self, rollout: Rollout, iteration: int) -> None:
        """`train/reward/<task>` for the tasks this rollout drew, straight to the loggers: through `self.log`
        a task absent from a rollout would repeat its last value (Lightning keeps a key's last step value)."""
        tasks = [m.get("task", "all") for m in rollout.meta]
        flat = {f"train/reward/{task}": rollout.rewards[[i for i, t in enumerate(tasks) if t == task]].mean().item()
                for task in sorted(set(tasks))}
        for logger in self.loggers:
            logger.log_metrics(flat, step=iteration)

    # -- updates ---------------------------------------------------------------------------------
    def _chunks(self, n: int, order: torch.Tensor | None = None) -> list[torch.Tensor]:
        order = torch.arange(n) if order is None else order
        return [order[i : i + self.micro_batch_size] for i in range(0, n, self.micro_batch_size)]

    def count(self, part: Rollout) -> torch.Tensor:
        return aggregate(torch.zeros_like(part.response_mask, dtype=torch.float32), part.response_mask,
                         self.loss_aggregation)[1]

    def update(self, rollout: Rollout) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """`epochs` x `minibatches` optimizer steps over the rollout (shuffled each epoch)."""
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(2, dtype=torch.float64))
        loss_total = torch.zeros((), device=self.device)
        if len(rollout) == 0:  # nothing to learn from: the steps still count (schedule, global step)
            for _ in range(self.epochs * self.minibatches):
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
            return sums, loss_total
        for _ in range(self.epochs):
            # every response in some minibatch (a rollout grown by a joined last window need not divide evenly)
            for minibatch in torch.tensor_split(torch.randperm(len(rollout)), self.minibatches):
                parts = [rollout.select(rows) for rows in self._chunks(len(minibatch), minibatch)]
                total = sum(float(self.count(p)) for p in parts)
                step_loss = torch.zeros((), device=self.device)
                for part in parts:
                    loss, metrics = self.update_loss(part)
                    scaled = loss / total
                    self.manual_backward(scaled)
                    step_loss += scaled.detach()
                    _accumulate(sums, metrics)
                _accumulate(sums, {"lr": (optimizer.param_groups[0]["lr"], 1.0)})
                optimizer.step()
                if self._grad_norm is not None:  # the mean over the iteration's optimizer steps
                    _accumulate(sums, {"grad_norm": (self._grad_norm, 1.0)})
                optimizer.zero_grad(set_to_none=True)
                if scheduler is not None:
                    scheduler.step()
                loss_total += step_loss
        return sums, loss_total / (self.epochs * self.minibatches)

    def policy_terms(self, part: Rollout, logps: torch.Tensor, entropy: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per-token statistics every method logs: KL to the reference (the configured estimator),
        approx. KL to the sampling policy, entropy; as {name: (sum, count)} over response tokens."""
        mask = part.response_mask.float()
        tokens = mask.sum()
        with torch.no_grad():
            kl = kl_penalty(logps.detach(), part.ref_logps, self.kl_estimator)
            old = part.old_logps if part.old_logps is not None else logps.detach()
            approx = 0.5 * (logps.detach() - old) ** 2
        terms = {"kl": ((kl * mask).sum(), tokens), "approx_kl": ((approx * mask).sum(), tokens)}
        if entropy is not None:
            terms["entropy"] = ((entropy * mask).sum(), tokens)
        return terms

    # -- held-out reward -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_heldout(self, iteration: int) -> dict:
        examples = self.trainer.datamodule.val_examples if self.trainer.datamodule is not None else []
        if not examples:
            return {}
        prompts = [e["prompt_input_ids"] for e in examples for _ in range(self.heldout_samples)]
        meta = [e["meta"] for e in examples for _ in range(self.heldout_samples)]
        greedy = self.heldout_temperature == 0
        spec = self.sampling if greedy or self.heldout_temperature is None else SamplingSpec(
            self.sampling.max_new_tokens, self.heldout_temperature, self.sampling.top_p)
        completions, stopped, lengths = [], [], []
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(HELDOUT_SEED)
            for start in range(0, len(prompts), HELDOUT_BATCH):
                samples = self.generate(prompts[start : start + HELDOUT_BATCH], spec, greedy)
                response_mask = samples.response_mask[:, samples.prompt_width:]
                completions += self.decode(samples.sequences[:, samples.prompt_width:], response_mask)
                stopped += samples.stopped.tolist()
                lengths += response_mask.sum(-1).tolist()
        scores = self.reward(completions, meta)
        tasks = [m.get("task", "all") for m in meta]
        by_task = {t: sum(s for s, x in zip(scores, tasks) if x == t) / tasks.count(t) for t in sorted(set(tasks))}
        result = {"iteration": iteration, "reward": {"mean": sum(scores) / len(scores), **by_task},
                  "completions/mean_length": sum(lengths) / len(lengths),
                  "completions/stopped": sum(stopped) / len(stopped)}
        k = self.heldout_samples  # a prompt's draws are one unit of the paired comparison (they are not independent)
        self._heldout_scores.append([sum(scores[i : i + k]) / k for i in range(0, len(scores), k)])
        if len(self._heldout_scores) > 1:
            change = paired_difference(self._heldout_scores[0], self._heldout_scores[-1])
            result["change"] = {"diff": change.diff, "low": change.low, "high": change.high, "n": change.n}
        self.heldout.append(result)
        flat = {"val/reward": result["reward"]["mean"], **{f"val/reward/{t}": v for t, v in by_task.items()},
                "val/completions/mean_length": result["completions/mean_length"],
                "val/completions/stopped": result["completions/stopped"]}
        rows = self._sample_rows(iteration, meta, completions, scores)
        for logger in self.loggers:
            logger.log_metrics(flat, step=iteration)
            if hasattr(logger, "log_text"):
                logger.log_text(key="val/samples", columns=list(rows[0]), data=[list(r.values()) for r in rows],
                                step=iteration)
        self._append_samples_csv(rows)
        change = result.get("change")
        log.info("held-out reward after %d iterations: %.3f (%s)%s", iteration, result["reward"]["mean"],
                 ", ".join(f"{t} {v:.2f}" for t, v in by_task.items()),
                 f"; {change['diff']:+.3f} [{change['low']:+.3f}, {change['high']:+.3f}] from the start"
                 if change else "")
        return result

    @staticmethod
    def _sample_rows(iteration: int, meta: list[dict], completions: list[str], scores: list[float]) -> list[dict]:
        rows, shown = [], defaultdict(int)
        for m, c, s in zip(meta, completions, scores):
            task = m.get("task", "all")
            if shown[task] < SAMPLES_PER_TASK:
                shown[task] += 1
                rows.append({"iteration": iteration, "task": task, "id": m.get("id", ""), "response": c,
                             "answer": m.get("answer", ""), "reward": s})
        return rows

    def _append_samples_csv(self, rows: list[dict]) -> None:
        path = Path(self.trainer.default_root_dir) / "samples.csv"
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if hasattr(self.reward, "place"):
            self.reward.place(self.device)

    # -- resume: the state a checkpoint carries beyond parameters, optimizer and schedule ------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["online_state"] = {"heldout": self.heldout, "heldout_scores": self._heldout_scores,
                                      "kl_coef": self.kl_coef, "update_metrics": sorted(self._update_metrics)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["online_state"]
        self.heldout, self._heldout_scores = state["heldout"], state["heldout_scores"]
        self.kl_coef, self._update_metrics = state["kl_coef"], set(state["update_metrics"])
        self._cut_samples_csv(self.heldout[-1]["iteration"] if self.heldout else -1)

    def _cut_samples_csv(self, last_iteration: int) -> None:
        """A resumed run evaluates again the held-out rounds after its checkpoint: drop their samples."""
        path = Path(self.trainer.default_root_dir) / "samples.csv"
        if path.is_file():
            keep_csv_rows(path, lambda row: int(row["iteration"]) <= last_iteration)

    # Lightning's validation loop is off for online methods (held-out reward above instead)
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        return None


def _prompts(window: list[dict]) -> tuple[list[list[int]], list[dict]]:
    """The prompts of a window's (right-padded) micro-batches as token lists, and their meta."""
    prompts, meta = [], []
    for micro in window:
        for ids, mask in zip(micro["prompt_input_ids"], micro["prompt_attention_mask"]):
            prompts.append(ids[mask.bool()].tolist())
        meta += micro["meta"]
    return prompts, meta


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over masked tokens: 1 is a perfect value function, 0 no better
    than a constant, negative worse than one."""
    m = mask.bool()
    target, error = returns[m].double(), (returns - values)[m].double()
    var = target.var(unbiased=False)
    return float("nan") if var == 0 else (1 - error.var(unbiased=False) / var).item()
