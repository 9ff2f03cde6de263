"""Forward passes that compute only the logits a loss needs."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from llmft.losses import IGNORE_INDEX, token_logps


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Forwards without dropout (evaluation, generation, the reference); the mode it had after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def supervised_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions t whose logits predict a supervised token (labels[:, t + 1] != -100) in any row."""
    return torch.nonzero((labels[:, 1:] != IGNORE_INDEX).any(dim=0)).flatten()


def supervised_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) restricted to the positions that predict supervised tokens.

    The vocabulary projection is about a fifth of a small model's compute, and in chat data most
    positions are prompt, so only the needed rows of logits are computed (`logits_to_keep`). The
    pair is aligned like a full forward pass (`llmft.losses` shift labels internally): feeding it to
    `sft_loss_sum` gives the same value as the full logits and labels.
    """
    labels = batch["labels"]
    keep = supervised_positions(labels)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
    # logits[:, j] predicts labels[:, keep[j] + 1]; pad one step so the losses' shift lines them up.
    kept_labels = F.pad(labels[:, keep + 1], (1, 0), value=IGNORE_INDEX)
    return F.pad(logits, (0, 0, 0, 1)), kept_labels


def sequence_logp_sums(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                       prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: (sum of log p of the supervised tokens, their number), from `<prefix>input_ids`,
    `<prefix>attention_mask` and `<prefix>labels`, computing logits only where a label is supervised."""
    fields = {k: batch[prefix + k] for k in ("input_ids", "attention_mask", "labels")}
    logits, labels = supervised_logits(model, fields)
    sums = token_logps(logits, labels).sum(-1)
    return sums, (labels[:, 1:] != IGNORE_INDEX).sum(-1)


def concat_pair(micro: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The chosen rows then the rejected rows of a pair micro-batch as one batch ([2B], one width).
    Padded positions are masked out of attention and labels, so any id does there."""
    width = max(micro["chosen_input_ids"].shape[1], micro["rejected_input_ids"].shape[1])
    fills = {"input_ids": 0, "attention_mask": 0, "labels": IGNORE_INDEX}
    return {key: torch.cat([F.pad(micro[f"{side}_{key}"], (0, width - micro[f"{side}_{key}"].shape[1]), value=fill)
                            for side in ("chosen", "rejected")])
            for key, fill in fills.items()}


def pair_logp_sums(model: torch.nn.Module, micro: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logp_sums` of the chosen rows then the rejected rows ([2B] each), in one forward pass
    over both: the policy sees chosen and rejected in the same batch."""
    return sequence_logp_sums(model, concat_pair(micro))



def last_token_scores(model: torch.nn.Module, head: torch.nn.Module, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor) -> torch.Tensor:
    """The head applied to each row's final hidden state at its last non-pad token ([B]).
    Right padding: the last real token of row b is at attention_mask[b].sum() - 1."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, logits_to_keep=1)
    hidden = out.hidden_states[-1]
    last = attention_mask.sum(-1) - 1
    return head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])


def pair_scores(model: torch.nn.Module, head: torch.nn.Module, micro: dict[str, torch.Tensor]) -> torch.Tensor:
    """`last_token_scores` of the chosen rows then the rejected rows ([2B]) in one forward pass."""
    both = concat_pair(micro)
    return last_token_scores(model, head, both["input_ids"], both["attention_mask"])


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as `generate()` numbers a left-padded prompt."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_forward(model: torch.nn.Module, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                     head: torch.nn.Module | None = None, with_entropy: bool = False, temperature: float = 1.0
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(log-probs [B, N], values [B, N] or None, entropy [B, N] or None) of the response tokens
    `sequences[:, prompt_width:]` (N = width - prompt_width), from one forward over prompt and response.

    Column t is the prediction made at position prompt_width + t - 1, the state before response
    token t: logits only for those N positions (`logits_to_keep`), the value head on the same
    hidden states. Rollout scoring and the loss both call this, so old and new log-probs share one
    layout. Positions count real tokens only (left padding does not shift them). The entropy is
    detached (a statistic, not a loss term). `temperature`: the log-probs of the distribution the
    responses were sampled from, softmax(logits / T), as TRL computes them.
    """
    n = sequences.shape[1] - prompt_width
    out = model(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                logits_to_keep=n + 1, output_hidden_states=head is not None)
    # logits at positions W-1 .. W+N-1; token_logps pairs logits[:, t - 1] with labels[:, t], so a dummy
    # first label column lines response token t up with the logits of position W-1+t
    labels = F.pad(sequences[:, prompt_width:], (1, 0), value=0)
    logits = out.logits if temperature == 1.0 else out.logits / temperature
    logps = token_logps(logits, labels)[:, 1:]
    values = None
    if head is not None:
        values = head(out.hidden_states[-1][:, prompt_width - 1 : prompt_width - 1 + n]).float()
    entropy = None
    if with_entropy:
        with torch.no_grad():
            floats = logits[:, :-1].float()
            entropy = torch.logsumexp(floats, -1) - (floats.softmax(-1) * floats).sum(-1)
    return logps, values, entropy


def response_values(model: torch.nn.Module, head: torch.nn.Module, sequences: torch.Tensor,
                    attention_mask: torch.Tensor, prompt_width: int) -> torch.Tensor:
    """Values [B, N] of a separate value model, in `response_forward`'s layout (column t: the state
    before response token t), without the vocabulary projection (one logit row is kept)."""
    n = sequences.shape[1] - prompt_width
    out = model(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                logits_to_keep=1, output_hidden_states=True)
    return head(out.hidden_states[-1][:, prompt_width - 1 : prompt_width - 1 + n]).float()
