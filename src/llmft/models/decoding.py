"""Batched greedy generation (left-padded, length-sorted batches, stops at end-of-turn)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from llmft.models.factory import end_of_turn_ids
from llmft.models.forward import eval_mode
from llmft.models.sampling import left_pad


@torch.no_grad()
def generate_greedy(
    model: torch.nn.Module,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 64,
    batch_size: int = 32,
    autocast_dtype: torch.dtype | None = None,
    desc: str = "generate",
) -> list[str]:
    """Greedy completions of `prompts` (already rendered with the chat template), in input order."""
    device = next(model.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    stop_ids = sorted(end_of_turn_ids(tokenizer))
    outputs: list[str] = [""] * len(prompts)
    with eval_mode(model):
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
            idx = order[start : start + batch_size]
            input_ids, attention_mask = left_pad([encoded[i] for i in idx], tokenizer.pad_token_id)
            width = input_ids.shape[1]
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                generated = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stop_ids,
                    pad_token_id=tokenizer.pad_token_id,
                )
            for row, i in enumerate(idx):
                outputs[i] = tokenizer.decode(generated[row, width:], skip_special_tokens=True).strip()
    return outputs
