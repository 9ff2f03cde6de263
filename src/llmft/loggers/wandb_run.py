"""The W&B logger of `logger=wandb` (conf/logger/wandb.yaml) and what a run records at its end.

- Online or offline is decided up front (llmft.loggers.wandb_mode); an online `wandb.init` that
  still fails (a bad key, a server that accepts connections but never answers) falls back to
  offline with the same run id instead of failing the run.
- The run id lives in `<save_dir>/wandb/llmft_run_id`: a logger built again for the same folder (a
  resumed or requeued run) continues the same W&B run (`resume="allow"`).
- Nothing W&B writes holds a secret: the config is redacted by the caller (`public_config`),
  git and code capture are off (the run card records the commit), and sys.argv is redacted while
  `wandb.init` records it.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import string
from argparse import Namespace
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _convert_params
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from llmft.loggers.redaction import public_card, redact, redacted_argv
from llmft.loggers.wandb_mode import ModeDecision, decide_mode

log = logging.getLogger(__name__)
RUN_ID_FILE = "llmft_run_id"


def new_run_id() -> str:
    """Eight base-36 characters, as W&B's own ids (drawn from `secrets`: seeding a run does not repeat them)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def persisted_run_id(save_dir: str | Path, run_id: str | None = None) -> str:
    """The W&B run id of the run folder: the one in `<save_dir>/wandb/llmft_run_id` if the file
    exists, else `run_id` (or a new id) written there. The first writer wins (a hard link of a
    complete file), so processes that race here agree on one id."""
    path = Path(save_dir) / "wandb" / RUN_ID_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_name(f".{RUN_ID_FILE}.{os.getpid()}")
        candidate.write_text((run_id or new_run_id()) + "\n")
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(candidate, path)
        candidate.unlink(missing_ok=True)
    stored = path.read_text().strip()
    if run_id and run_id != stored:
        log.warning("logger.wandb.id=%s ignored: %s holds the run id %s (delete it to start another W&B run)",
                    run_id, path, stored)
    return stored


def sweep_group() -> str | None:
    """Under a Hydra multirun, the sweep folder with its parent, `<date folder>_<sweep folder>`
    (hydra.sweep.dir's last two parts, e.g. `2026-01-01_10-00-00`: the time alone repeats every day);
    None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return "_".join(Path(HydraConfig.get().sweep.dir).parts[-2:])


def sync_command(save_dir: str | Path, run_id: str) -> str:
    """The command that uploads every offline part of this run (a resumed run has one per start)."""
    folder = Path(save_dir) / "wandb"
    try:
        folder = folder.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return f"wandb sync {folder}/offline-run-*-{run_id}"


class LlmftWandbLogger(WandbLogger):
    """Lightning's WandbLogger that starts offline when `decision` says so, and falls back to
    offline when an online start fails."""

    def __init__(self, decision: ModeDecision, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)  # Lightning passes it; wandb warns that it has no effect
        self.decision = decision

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        """As Lightning's, with secrets redacted (train.py already passes `public_config(cfg)`)."""
        super().log_hyperparams(redact(_convert_params(params)))

    @property
    def offline(self) -> bool:
        return self.decision.mode == "offline"

    def sync_hint(self) -> str:
        return (f"W&B ran offline ({self.decision.reason}). Upload this run later with: "
                f"{sync_command(self.save_dir, self.version)}")

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None and self.decision.mode == "online":
            try:
                with redacted_argv():
                    return super().experiment
            except Exception as err:  # wandb raises several types (CommError, AuthenticationError, ...)
                self._experiment = None
                import wandb

                wandb.teardown()  # the failed stream keeps the run id busy in W&B's service process
                self.decision = ModeDecision("offline", f"wandb.init failed online: {type(err).__name__}: {err}")
                self._wandb_init["mode"] = "offline"
                self._wandb_init.pop("log_model", None)
                log.warning(self.sync_hint())
        with redacted_argv():
            return super().experiment


def wandb_logger(save_dir: str, project: str = "llmft", entity: str | None = None, name: str | None = None,
                 group: str | None = None, tags: Iterable[str] = (), notes: str | None = None,
                 id: str | None = None, mode: str | None = None, probe_timeout: float = 5.0,
                 init_timeout: float = 30.0, **kwargs: Any) -> LlmftWandbLogger:
    """The `logger=wandb` logger (options documented in conf/logger/wandb.yaml)."""
    decision = decide_mode(mode, probe_timeout)
    run_id = persisted_run_id(save_dir, id)
    if decision.mode == "offline":
        kwargs.pop("log_model", None)  # Lightning refuses log_model offline; checkpoints stay in the run folder
    import wandb  # here, not at the top: llmft imports (and benchmarks run) without wandb installed

    settings = wandb.Settings(init_timeout=float(init_timeout), disable_git=True, save_code=False, disable_code=True,
                              **({"base_url": decision.base_url} if decision.base_url else {}))
    logger = LlmftWandbLogger(
        decision, save_dir=save_dir, project=project, entity=entity, name=name or Path(save_dir).name,
        group=group if group is not None else sweep_group(), tags=list(dict.fromkeys(t for t in tags if t)),
        notes=notes, id=run_id, resume="allow", mode=decision.mode, settings=settings, **kwargs)
    if decision.mode == "offline":
        log.warning(logger.sync_hint() + f" (decided in {decision.seconds:.2f} s)")
    else:
        log.info("W&B %s: %s (decided in %.2f s)", decision.mode, decision.reason, decision.seconds)
    return logger


def record_run(loggers: Iterable, card: Mapping, reports: Mapping) -> None:
    """At the end of a run, for each W&B logger: the run card (secrets redacted) into the summary under
    `run_card`, run_card.json and eval.json (`reports`, when there are any) among the run's files;
    then finish the W&B run (the next job of a multirun starts its own) and, offline, log how to upload
    it. Call it last: nothing can be logged to a finished run. Other loggers are left alone."""
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        import wandb

        run = logger.experiment
        if not isinstance(run, wandb.Run):  # disabled (a no-op run), or a rank other than 0
            continue
        card = public_card(card)
        run.summary.update({"run_card": card})
        files = {"run_card.json": card, **({"eval.json": redact(reports)} if reports else {})}
        for name, data in files.items():
            path = Path(run.dir) / name
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
            run.save(str(path), base_path=run.dir, policy="now")
        run.finish()
        if isinstance(logger, LlmftWandbLogger) and logger.offline:
            log.warning(logger.sync_hint())
