"""What a user sees on the console: our log lines, the progress bars and the table.

Libraries print notices a user of llmft cannot act on (a deprecation inside transformers or
Lightning, a tip to install a cloud logger, a warning that the run folder Hydra just created is
"not empty"). They are filtered here by their exact text, so any other warning still shows.
"""
from __future__ import annotations

import logging
import warnings

# (category, message regex) of warnings that are not the user's to act on
UNACTIONABLE_WARNINGS = (
    # transformers, called from peft: an internal rename, nothing in llmft's config controls it
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    (FutureWarning, r"`gradient_checkpointing_enable` is deprecated"),  # peft's prepare_model_for_kbit_training
    # Lightning's CSV logger: Hydra's run folder always holds .hydra/ and the log file already
    (UserWarning, r"Experiment logs directory .* exists and is not empty"),
    # Lightning, at fit start: the frozen reference model (and a frozen parent) stays in eval mode on
    # purpose; methods/base.py puts the policy in train mode at every step (tests/integration/test_training_loop.py)
    (UserWarning, r"Found \d+ module\(s\) in eval mode at the start of training"),
    # Lightning's own use of torch's pytree API
    (Warning, r".*isinstance\(treespec, LeafSpec\)` is deprecated"),
)
# Lightning's advertisement lines (logged at INFO on every Trainer construction)
UNACTIONABLE_LOG_PREFIXES = ("💡 Tip:",)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(UNACTIONABLE_LOG_PREFIXES)


def quiet_console() -> None:
    """Route Lightning's log records through Hydra's handlers only, and drop unactionable notices."""
    for category, message in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()  # Lightning adds its own console handler: use Hydra's (console + log file)
        logger.propagate = True
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in tips.filters):
        tips.addFilter(_DropTips())
