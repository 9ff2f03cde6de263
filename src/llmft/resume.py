"""`python train.py resume=<run dir>`, and a requeued SLURM job: continue a run where its last
checkpoint left it, in the same folder, with the run's own config.

A run writes its resolved config to `checkpoints/resume/config.yaml` when it starts (so a resume
does not depend on Hydra resolving `${hydra:...}` the same way again), and the base model's
evaluation to `checkpoints/resume/base_eval.json` (a resume does not evaluate it again).
`metrics.csv` is cut back to the rows the checkpoint covers: a run killed after its last checkpoint
logged steps that the resumed run trains and logs again.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from llmft.checkpoints import saved_checkpoints
from llmft.loggers.redaction import env_secrets
from llmft.utils import keep_csv_rows, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)
RESUME_DIR = Path("checkpoints") / "resume"


@dataclass
class ResumePoint:
    checkpoint: Path
    global_step: int  # optimizer steps the checkpoint holds
    log_step: int  # the last `step` value of metrics.csv it covers


def run_config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RESUME_DIR / "config.yaml"


def base_eval_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RESUME_DIR / "base_eval.json"


def save_run_config(cfg: DictConfig, out: Path) -> None:
    """The config resolved, except where resolving reads the environment (`${oc.env:HF_TOKEN}`, or a
    value built from one): those stay interpolations, so a resume reads the environment again and no
    secret is written to the run folder."""
    kept = _keep_env_lookups(OmegaConf.to_container(cfg, resolve=False), OmegaConf.to_container(cfg, resolve=True),
                             env_secrets())
    write_bytes_atomic(run_config_path(out), OmegaConf.to_yaml(OmegaConf.create(kept)).encode())


def _keep_env_lookups(raw, resolved, secrets: list[str]):
    if isinstance(raw, dict):
        return {k: _keep_env_lookups(raw[k], resolved[k], secrets) for k in raw}
    if isinstance(raw, list):
        return [_keep_env_lookups(r, v, secrets) for r, v in zip(raw, resolved)]
    reads_env = isinstance(raw, str) and "${oc.env:" in raw
    holds_secret = isinstance(resolved, str) and any(secret in resolved for secret in secrets)
    return raw if reads_env or holds_secret else resolved


def requeued() -> bool:
    """A SLURM job started again by `scontrol requeue` (preemption, time limit)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


def resolve(cfg: DictConfig, out: Path, overrides: list[str]) -> tuple[DictConfig, Path, ResumePoint | None]:
    """(the config to run, the run folder, where to resume from or None for a fresh run).

    `resume=<dir>`: that run's own config and folder, from its newest checkpoint; no other override
    is allowed (it would make the continuation a different run). A requeued SLURM job resumes its own
    folder. A fresh run refuses a folder that already holds resume checkpoints."""
    if cfg.get("resume"):
        folder = Path(cfg.resume).expanduser().resolve()
        extra = [o for o in overrides if not o.startswith(("resume=", "hydra.", "hydra/"))]
        if extra:
            raise ValueError(f"resume={cfg.resume} continues the run with its own config "
                             f"({run_config_path(folder)}); drop the other overrides: {' '.join(extra)}")
        point = _resume_point(folder, key=f"resume={cfg.resume}")
        run_cfg = OmegaConf.load(run_config_path(folder))
        run_cfg.paths.output_dir = str(folder)
        run_cfg.resume = str(folder)
        return run_cfg, folder, point
    if requeued() and saved_checkpoints(out / RESUME_DIR):
        log.warning("requeued SLURM job (restart %s): resuming %s", os.environ["SLURM_RESTART_COUNT"], out)
        return cfg, out, _resume_point(out, key="requeued job")
    if requeued() and cut_metrics(out, -1):
        log.warning("requeued SLURM job before its first checkpoint: starting %s over", out)
    if saved_checkpoints(out / RESUME_DIR):
        raise FileExistsError(f"{out} already holds the checkpoints of an earlier run: continue it with resume={out}, "
                              "or choose a new folder (hydra.run.dir=...)")
    return cfg, out, None


def _resume_point(folder: Path, key: str) -> ResumePoint:
    if not folder.is_dir():
        raise FileNotFoundError(f"{key}: no such folder")
    if (folder / "run_card.json").is_file():
        raise ValueError(f"{key}: the run finished (it has run_card.json); start a new one, e.g. init_from={folder}")
    if not run_config_path(folder).is_file():
        raise FileNotFoundError(f"{key}: no {RESUME_DIR / 'config.yaml'} (not a llmft run folder, or written by a "
                                "version without resume checkpoints)")
    checkpoints = saved_checkpoints(folder / RESUME_DIR)
    if not checkpoints:
        raise FileNotFoundError(f"{key}: no checkpoint in {folder / RESUME_DIR}: the run stopped before its first "
                                "one (callbacks.resume_checkpoints.every_n_steps); start it again")
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=False, mmap=True)
    progress = state["loops"]["fit_loop"]["epoch_loop.state_dict"]
    point = ResumePoint(checkpoints[-1], int(state["global_step"]), int(progress["_batches_that_stepped"]))
    log.info("resuming %s from %s (optimizer step %d)", folder, point.checkpoint.name, point.global_step)
    return point


def cut_metrics(run_dir: Path, log_step: int) -> int:
    """Drop the rows of metrics.csv logged after `log_step` (a resumed run logs them again; -1: all of
    them, for a run that starts over); returns how many were dropped."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return 0
    dropped = keep_csv_rows(path, lambda row: row.get("step") in (None, "") or int(row["step"]) <= log_step)
    if dropped:
        log.info("metrics.csv: dropped %d rows logged after the checkpoint", dropped)
    return dropped


def save_base_eval(run_dir: Path, report: dict, records: list[dict]) -> None:
    write_json_atomic(base_eval_path(run_dir), {"report": report, "records": records})


def load_base_eval(run_dir: Path) -> tuple[dict, list[dict]] | None:
    path = base_eval_path(run_dir)
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return saved["report"], saved["records"]
