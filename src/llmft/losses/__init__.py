"""Pure tensor loss functions (torch only: no model, no config). API in DESIGN.md, "Loss API"."""

from .kto import kto_loss
from .logps import IGNORE_INDEX, sequence_logps, token_logps
from .preference import dpo_loss, hinge_loss, ipo_loss, orpo_loss, simpo_loss
from .reward import bradley_terry_loss
from .rl import aggregate, gae, group_advantages, kl_penalty, masked_whiten, ppo_policy_loss, ppo_value_loss, rloo_advantages
from .sft import sft_loss, sft_loss_sum

__all__ = [
    "IGNORE_INDEX",
    "token_logps",
    "sequence_logps",
    "sft_loss",
    "sft_loss_sum",
    "dpo_loss",
    "ipo_loss",
    "hinge_loss",
    "simpo_loss",
    "orpo_loss",
    "kto_loss",
    "bradley_terry_loss",
    "kl_penalty",
    "gae",
    "ppo_policy_loss",
    "ppo_value_loss",
    "group_advantages",
    "rloo_advantages",
    "aggregate",
    "masked_whiten",
]
