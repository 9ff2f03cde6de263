"""Loggers beyond Lightning's own: W&B that never blocks a run and never logs a secret.

train.py passes `public_config(cfg)` to every logger's `log_hyperparams` and calls `record_run` at
the end of a run; conf/logger/wandb.yaml builds `wandb_logger`.
"""
from llmft.loggers.redaction import public_card, public_config, redact
from llmft.loggers.wandb_run import LlmftWandbLogger, persisted_run_id, record_run, wandb_logger

__all__ = ["LlmftWandbLogger", "persisted_run_id", "public_card", "public_config", "record_run", "redact",
           "wandb_logger"]
