"""Learning-rate schedules, as partials `(optimizer, total_steps) -> LRScheduler` (`conf/schedule/`)."""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_ratio: float = 0.1, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warm-up over `warmup_ratio * total_steps`, then cosine decay to `min_lr_ratio * lr`."""
    warmup = int(round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, total_steps: int, warmup_ratio: float = 0.0) -> LambdaLR:
    warmup = int(round(warmup_ratio * total_steps))
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))
