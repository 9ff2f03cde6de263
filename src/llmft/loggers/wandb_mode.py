"""Online or offline, decided before `wandb.init` so that a run never waits on the network.

`wandb.init` online with an API key but no route to the server blocks for its `init_timeout`
(90 s by default) and then raises. Here the decision takes seconds: W&B's own mode setting
(`WANDB_MODE`, `wandb offline`), then whether any credentials exist (`WANDB_API_KEY`,
`WANDB_IDENTITY_TOKEN_FILE`, `wandb login`'s ~/.netrc entry, the settings file), then a TCP connect
to the server named by W&B's `base_url` (`WANDB_BASE_URL`, or the proxy that would carry the
request) with a short timeout. The reason for going offline is kept, for the warning and the
`wandb sync` hint.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmft.network import probe, probe_target

if TYPE_CHECKING:
    import wandb

FALLBACK_BASE_URL = "https://api.wandb.ai"


@dataclass(frozen=True)
class ModeDecision:
    mode: str  # "online" | "offline" | "disabled"
    reason: str  # why: shown in the warning of an offline run and kept on the logger
    seconds: float = 0.0  # time the decision took
    base_url: str | None = None  # the server probed: wandb.init is given this one (W&B caches its settings per process)


def wandb_settings() -> wandb.Settings:
    """W&B's settings from its settings file and the environment, loaded the way `wandb.init` loads
    them (wandb/sdk/wandb_setup.py, `_load_settings`) but without touching W&B's global state."""
    import wandb  # here, not at the top: llmft imports (and benchmarks run) without wandb installed

    settings = wandb.Settings()
    config_dir = os.environ.get("WANDB_CONFIG_DIR")
    settings.settings_system = str(Path(config_dir).expanduser() / "settings" if config_dir
                                   else Path("~", ".config", "wandb", "settings").expanduser())
    settings.update_from_system_settings()
    settings.update_from_env_vars(dict(os.environ))
    return settings


def has_credentials(settings: wandb.Settings) -> str | None:
    """Where W&B would find credentials for `settings.base_url`, or None when it would find none."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if os.environ.get(name):
            return name
    if settings.api_key or getattr(settings, "identity_token_file", None):
        return "the W&B settings"
    try:
        from wandb.sdk.lib.wbauth import wbnetrc

        if wbnetrc.read_netrc_auth(host=settings.base_url):
            return "~/.netrc (wandb login)"
    except Exception:  # an unreadable or malformed netrc: wandb.init would not use it either
        pass
    return None


def decide_mode(requested: str | None, probe_timeout: float) -> ModeDecision:
    """Online only when nothing asks for offline, credentials exist and the server answers."""
    started = time.perf_counter()

    def decided(mode: str, reason: str, base_url: str | None = None) -> ModeDecision:
        return ModeDecision(mode, reason, round(time.perf_counter() - started, 3), base_url)

    if requested in ("offline", "disabled"):
        return decided(requested, f"logger.wandb.mode={requested}")
    if requested not in (None, "online"):
        raise ValueError(f"logger.wandb.mode={requested}: expected null, online, offline or disabled")
    settings = wandb_settings()
    if settings.mode in ("offline", "dryrun", "disabled"):
        return decided("disabled" if settings.mode == "disabled" else "offline",
                       f"W&B mode is {settings.mode} (WANDB_MODE or `wandb offline`)")
    source = has_credentials(settings)
    if source is None:
        return decided("offline", "no W&B credentials (WANDB_API_KEY, `wandb login`)")
    base_url = settings.base_url or FALLBACK_BASE_URL
    host, port = probe_target(base_url)
    failure = probe(host, port, probe_timeout)
    if failure is not None:
        return decided("offline", f"credentials from {source}, but {host}:{port} is unreachable ({failure})")
    return decided("online", f"credentials from {source}, {host}:{port} answers", base_url)
