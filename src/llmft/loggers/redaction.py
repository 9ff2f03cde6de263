"""Secrets out of everything a run logs: the config, the run card, the command line.

Two rules, applied together:
- a mapping key whose name is a secret's (its last word is token, key, secret, password, ...:
  `hf_token`, `api_key`, `apiKey`, `AWS_SECRET_ACCESS_KEY`; not `max_new_tokens`) has its value
  replaced by "<redacted>";
- any text that contains the value of a secret environment variable (named the same way:
  `WANDB_API_KEY`, `HF_TOKEN`, `MY_SERVICE_TOKEN`, `*_SECRET`, ...; values of 8 characters or more)
  has that value replaced by "<redacted>", wherever it appears (values, mapping keys, list items).
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

REDACTED = "<redacted>"
SECRET_WORDS = frozenset({"token", "key", "secret", "password", "passwd", "passphrase", "pwd",
                          "credential", "credentials", "apikey", "auth"})
MIN_ENV_SECRET_LENGTH = 8  # shorter values ("1", "true") would redact ordinary text
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def is_secret_name(name: str) -> bool:
    """True for names like `hf_token`, `WANDB_API_KEY`, `apiKey`, `db.password` (the last word counts)."""
    words = _WORD.findall(str(name))
    return bool(words) and words[-1].lower() in SECRET_WORDS


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the environment's secret variables, longest first (so a longer secret that
    contains a shorter one is replaced whole)."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if is_secret_name(k) and len(v) >= MIN_ENV_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of `obj` (dicts, lists, tuples, scalars) with secrets replaced by "<redacted>"."""
    secrets = env_secrets() if secrets is None else secrets
    if isinstance(obj, Mapping):
        return {redact(k, secrets): REDACTED if is_secret_name(k) and obj[k] is not None else redact(obj[k], secrets)
                for k in obj}
    if isinstance(obj, (list, tuple)):
        return [redact(x, secrets) for x in obj]
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, REDACTED)
    return obj


def public_config(cfg: DictConfig) -> dict:
    """The resolved config as loggers should see it (W&B config, hparams.yaml): secrets redacted."""
    return redact(OmegaConf.to_container(cfg, resolve=True))


def redact_override(arg: str, secrets: list[str] | None = None) -> str:
    """One command-line word: `+hf_token=abc` -> `+hf_token=<redacted>`; env secrets replaced."""
    name, sep, value = arg.partition("=")
    if sep and value and is_secret_name(name.lstrip("+~").rsplit(".", 1)[-1]):
        return f"{name}={REDACTED}"
    return redact(arg, secrets)


def redact_command(command: str) -> str:
    """A shell command line (the run card's `command`) with every word passed through `redact_override`."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: redact the text as a whole
        return redact(command)
    return shlex.join(redact_override(w) for w in words)


def public_card(card: Mapping) -> dict:
    """The run card with secrets redacted, its command line included."""
    public = redact(card)
    if isinstance(public.get("command"), str):
        public["command"] = redact_command(public["command"])
    return public


@contextlib.contextmanager
def redacted_argv() -> Iterator[None]:
    """sys.argv with secrets redacted while the block runs: wandb.init records sys.argv[1:] in the
    run's metadata (the `args` of the environment record) and offers no setting to change it."""
    saved = sys.argv
    sys.argv = saved[:1] + [redact_override(a) for a in saved[1:]]
    try:
        yield
    finally:
        sys.argv = saved
