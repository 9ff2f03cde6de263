"""Forward passes that compute only the logits a loss needs."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmft.losses import IGNORE_INDEX, token_logps
from llmft.losses.linear_logps import linear_token_logps
from llmft.models.attention import NAME as ATTENTION
from llmft.models.attention import unused_mask
from llmft.models.shared_cast import kept_cast
from llmft.models.shared_prompt import shared_prompt_layout


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


PACKED_TOKEN_FIELDS = ("input_ids", "labels", "position_ids", "doc_ids")  # [rows, width] in a packed micro-batch


def is_packed(batch: dict) -> bool:
    """A packed micro-batch (`llmft.data.packing`) carries per-document `position_ids`."""
    return "position_ids" in batch


def uses_flash_attention(model: torch.nn.Module) -> bool:
    return "flash" in str(getattr(model.config, "_attn_implementation", "") or "")


def runs_padding_free(model: torch.nn.Module) -> bool:
    """Packed micro-batches run as one row of real tokens: flash-attn's varlen kernel, or `llmft_sdpa`
    (`models.attention`: sdpa within each document)."""
    return uses_flash_attention(model) or getattr(model.config, "_attn_implementation", None) == ATTENTION


def document_bounds(position_ids: torch.Tensor) -> dict[str, torch.Tensor | int]:
    """flash-attn's varlen arguments for one packed row: where each document starts (`position_ids` 0)."""
    starts = torch.nonzero(position_ids[0] == 0).flatten()
    cu = torch.cat([starts, starts.new_tensor([position_ids.shape[1]])]).to(torch.int32)
    longest = int(cu.diff().max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def model_inputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict:
    """What the model is given for a batch (unpacked or packed); see `packed_for` for the packed layout.

    Packed: `position_ids` restart at every document, and there is no attention mask and no KV cache.
    transformers (5.x) then confines attention to each document (sdpa/eager: a block-diagonal causal
    mask built from the position ids; flash-attention: the varlen kernel). It does so *only* without a
    2-D attention mask and without a cache: with the default `use_cache=True` the model makes a cache
    first, the detection is skipped, and every token attends to the documents before it in its row.

    Unpacked and right-padded (as `data.collate` pads), under sdpa or eager attention: causal attention
    alone already keeps every real token from the padding after it, so no mask is built or passed and
    attention takes its plain causal path. Only padding
    positions compute differently, and no loss reads them. flash-attention keeps the mask: with it,
    transformers drops the padding before the kernel.
    """
    if is_packed(batch):
        inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
        if runs_padding_free(model) and batch["input_ids"].shape[0] == 1:
            inputs |= document_bounds(batch["position_ids"])
            if not uses_flash_attention(model):
                inputs["attention_mask"] = unused_mask(batch["input_ids"].device)
        return inputs
    mask = batch["attention_mask"]
    if not uses_flash_attention(model) and is_right_padded(mask):
        return {"input_ids": batch["input_ids"], "use_cache": False}
    return {"input_ids": batch["input_ids"], "attention_mask": mask, "use_cache": False}


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is real tokens then padding (no padding before a real token)."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


def packed_for(model: torch.nn.Module, batch: dict) -> dict:
    """A packed micro-batch as the model's attention needs it. eager (or plain sdpa): as collated,
    [rows, width]. flash-attention and `llmft_sdpa` (`runs_padding_free`): the real tokens of every row
    in one row [1, tokens], the documents' bounds passed along (padding-free, as TRL's `padding_free`)."""
    if not (is_packed(batch) and runs_padding_free(model)):
        return batch
    real = batch["attention_mask"].bool()
    return {**batch, **{key: batch[key][real].unsqueeze(0) for key in PACKED_TOKEN_FIELDS},
            "attention_mask": torch.ones_like(batch["input_ids"][real]).unsqueeze(0)}


def kept_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, labels, keep): logits only at the positions `keep` that predict a supervised token;
    see `supervised_logits`. `batch` is in the layout the model runs (`packed_for`)."""
    labels = batch["labels"]
    keep = supervised_positions(labels)
    logits = model(**model_inputs(model, batch), logits_to_keep=keep).logits
    # logits[:, j] predicts labels[:, keep[j] + 1]; pad one step so the losses' shift lines them up.
    kept_labels = F.pad(labels[:, keep + 1], (1, 0), value=IGNORE_INDEX)
    return F.pad(logits, (0, 0, 0, 1)), kept_labels, keep


def supervised_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) restricted to the positions that predict supervised tokens.

    The vocabulary projection is about a fifth of a small model's compute, and in chat data most
    positions are prompt, so only the needed rows of logits are computed (`logits_to_keep`). The
    pair is aligned like a full forward pass (`llmft.losses` shift labels internally): feeding it to
    `sft_loss_sum` gives the same value as the full logits and labels. A packed micro-batch
    (`is_packed`) runs with attention confined to each document (`model_inputs`).
    """
    logits, labels, _ = kept_logits(model, packed_for(model, batch))
    return logits, labels


# Architectures whose logits are exactly lm_head(final hidden state): no soft-capping, logit scale or
# multiplier. Others (or an output layer peft has wrapped) take the plain path.
PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "smollm3", "olmo2", "phi3"})


@dataclass
class SupervisedLogps:
    """log p of every supervised token of a batch (in the layout the model ran, `packed_for`): `logps[n]`
    is the log-probability of `labels[rows[n], cols[n]]` given the tokens before it."""

    logps: torch.Tensor  # [N], float32
    rows: torch.Tensor  # [N]
    cols: torch.Tensor  # [N]

    def per_row(self, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.grouped(self.rows, n_rows)

    def grouped(self, group: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
        return group_sums(self.logps, group, n_groups)


def group_sums(logps: torch.Tensor, group: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p, number of tokens) per group id ([N] -> [n_groups])."""
    sums = logps.new_zeros(n_groups).index_add(0, group, logps)
    counts = torch.zeros(n_groups, dtype=torch.long, device=group.device)
    return sums, counts.index_add_(0, group, torch.ones_like(group))


def chunkable_head(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The output projection when logits are exactly `head(final hidden state)` and the chunked path
    (`losses.linear_token_logps`) can replace it; None otherwise (the plain `logits_to_keep` path)."""
    peft_config = getattr(model, "peft_config", {}).get("default")
    if getattr(peft_config, "is_prompt_learning", False):  # virtual tokens shift the hidden states
        return None
    if getattr(model.config, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        return None
    if not isinstance(getattr(model.get_decoder(), "norm", None), torch.nn.Module):
        return None
    head = model.get_output_embeddings()
    return head if type(head) is torch.nn.Linear else None  # not a LoRA-wrapped or quantised head


CAST_ATTRIBUTE = "_llmft_cast_weight"  # on the head module: its weight's cast (`kept_cast`)


def head_weight(head: torch.nn.Linear) -> torch.Tensor:
    """The output projection's weight as the chunked log-probs multiply by it: under autocast, a frozen
    float32 weight (LoRA's tied embeddings) cast to the autocast dtype once and kept while it is unchanged
    (its version counter), instead of a new cast, 28M values for SmolLM2, in every forward. A trainable
    weight, or no autocast, is passed as it is (`linear_token_logps` casts as `nn.Linear` would). A change
    made through `weight.data` moves no version counter and is not seen: change the weight itself
    (`copy_` under no_grad, `load_state_dict`). The cast is kept as long as the head (57 MB for SmolLM2)."""
    weight = head.weight
    device = weight.device.type
    if weight.requires_grad or not torch.is_autocast_enabled(device) or not weight.is_floating_point():
        return weight
    dtype = torch.get_autocast_dtype(device)
    if weight.dtype == dtype:
        return weight
    return kept_cast(head, CAST_ATTRIBUTE, weight, dtype)


def supervised_token_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> SupervisedLogps:
    """log p of each supervised token, the vocabulary projection computed only at the positions that
    predict one. `batch` is in the layout the model runs (`packed_for`).

    Where the output layer allows (`chunkable_head`), the final hidden states at exactly those
    positions go through `linear_token_logps`: the [N, V] logits are made a chunk at a time and never
    kept. Otherwise `logits_to_keep` computes the logits at every column supervised in any row.
    """
    labels = batch["labels"]
    rows, cols = torch.nonzero(labels[:, 1:] != IGNORE_INDEX, as_tuple=True)
    cols = cols + 1
    head = chunkable_head(model)
    if head is None:
        logits, kept_labels, keep = kept_logits(model, batch)
        logps = token_logps(logits, kept_labels)
        column = torch.searchsorted(keep, cols - 1) + 1  # where labels[:, c] sits in kept_labels
        return SupervisedLogps(logps[rows, column], rows, cols)
    hidden = final_hidden_states(model, batch)[rows, cols - 1]
    return SupervisedLogps(linear_token_logps(hidden, head_weight(head), labels[rows, cols], head.bias), rows, cols)


def final_hidden_states(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's output after its final norm, [B, T, H], from a forward that computes no logits. Taken
    by a hook on that norm: `output_hidden_states` would hold every layer's states until the forward
    returns (under no_grad, for a reference or an evaluation, they would otherwise be freed layer by layer)."""
    return hidden_after_norm(model, model_inputs(model, batch))


def hidden_after_norm(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """`final_hidden_states` of the forward `model(**inputs)`."""
    captured = []
    no_logits = torch.empty(0, dtype=torch.long, device=inputs["input_ids"].device)
    hook = model.get_decoder().norm.register_forward_hook(lambda _module, _inputs, out: captured.append(out))
    try:
        with head_untouched(model):
            model(**inputs, logits_to_keep=no_logits)
    finally:
        hook.remove()
    return captured[-1]


@contextlib.contextmanager
def head_untouched(model: torch.nn.Module) -> Iterator[None]:
    """A forward asked for no logits (`logits_to_keep` empty) still calls the output layer on zero
    positions, and under autocast that casts its whole float32 weight (LoRA's tied embeddings: 28M values
    for SmolLM2) in every forward. Within this context a plain `nn.Linear` head returns its empty
    [..., 0, V] output without touching the weight; any other head is called as it is."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or "forward" in head.__dict__:
        yield
        return
    head.forward = _empty_logits.__get__(head)
    try:
        yield
    finally:
        del head.forward


def _empty_logits(head: torch.nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    if hidden.numel():
        raise RuntimeError("head_untouched: the output layer was asked for logits at "
                           f"{hidden.shape[:-1].numel()} positions; expected none (logits_to_keep empty)")
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    return hidden.new_empty(*hidden.shape[:-1], head.out_features, dtype=dtype)


def supervised_nll_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL of the supervised tokens, their number), as `sft_loss_sum` of the full logits."""
    tokens = supervised_token_logps(model, packed_for(model, batch))
    return -tokens.logps.sum(), torch.tensor(tokens.logps.shape[0], device=tokens.logps.device)


def sequence_logp_sums(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                       prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: (sum of log p of the supervised tokens, their number), from `<prefix>input_ids`,
    `<prefix>attention_mask` and `<prefix>labels` (`supervised_token_logps`).
    A packed micro-batch gives them per document instead (`document_logp_sums`)."""
    if is_packed(batch):
        return document_logp_sums(model, batch)
    fields = {k: batch[prefix + k] for k in ("input_ids", "attention_mask", "labels")}
    return supervised_token_logps(model, fields).per_row(fields["labels"].shape[0])


def document_logp_sums(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per document of a packed micro-batch, in `doc_ids` order: (sum of log p of its supervised tokens,
    their number). Pairs: chosen documents [P] then rejected [P], as `pair_logp_sums` returns them."""
    batch = packed_for(model, batch)
    tokens = supervised_token_logps(model, batch)
    n_docs = int(batch["doc_ids"].max()) + 1  # pairs: the last rejected document is 2P - 1
    return tokens.grouped(batch["doc_ids"][tokens.rows, tokens.cols], n_docs)


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
    over both: the policy sees chosen and rejected in the same batch. A packed micro-batch already
    holds both sides, as documents (`document_logp_sums`). Where the model allows (a plain output layer,
    `llmft_sdpa` attention) each pair's shared prompt is computed once (`shared_prompt_logp_sums`)."""
    if is_packed(micro):
        return document_logp_sums(model, micro)
    head = chunkable_head(model)
    longest = max(micro["chosen_input_ids"].shape[1], micro["rejected_input_ids"].shape[1])
    if head is not None and getattr(model.config, "_attn_implementation", None) == ATTENTION \
            and no_sliding_window_within(model, longest) \
            and all(is_right_padded(micro[f"{side}_attention_mask"]) for side in ("chosen", "rejected")):
        return shared_prompt_logp_sums(model, head, micro)
    return sequence_logp_sums(model, concat_pair(micro))


def no_sliding_window_within(model: torch.nn.Module, length: int) -> bool:
    """No sliding attention window shorter than `length` (Mistral, Qwen2/3 and Phi-3 configs may set one):
    the segments of `shared_prompt_logp_sums` attend with a plain causal mask."""
    window = getattr(model.config, "sliding_window", None)
    return window is None or getattr(model.config, "use_sliding_window", True) is False or length <= window


def shared_prompt_logp_sums(model: torch.nn.Module, head: torch.nn.Linear, micro: dict[str, torch.Tensor]
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """`pair_logp_sums` with each pair's prompt computed once (`models.shared_prompt`): one row of every
    pair's [prompt | chosen | rejected], the rejected tokens blind to the chosen ones."""
    layout = shared_prompt_layout(micro)
    hidden = hidden_after_norm(model, layout.model_inputs())[0, layout.predictors]
    logps = linear_token_logps(hidden, head_weight(head), layout.targets, head.bias)
    return group_sums(logps, layout.groups, layout.n_groups)



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
