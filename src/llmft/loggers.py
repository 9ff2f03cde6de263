"""Logger factories that need more than Lightning's constructor."""
from __future__ import annotations

import os

from lightning.pytorch.loggers import WandbLogger


def wandb_logger(**kwargs) -> WandbLogger:
    """WandbLogger that never blocks on the network: offline unless an API key is set."""
    online = bool(os.environ.get("WANDB_API_KEY")) and os.environ.get("WANDB_MODE", "online") != "offline"
    kwargs.setdefault("offline", not online)
    return WandbLogger(**kwargs)
