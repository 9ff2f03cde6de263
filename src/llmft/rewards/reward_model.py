"""A reward model trained by `method=reward`, loaded from its run folder, as a reward."""
from __future__ import annotations

import logging

import torch
from hydra.utils import instantiate

from llmft.data.collate import pad_batch
from llmft.data.templates import ChatRenderer
from llmft.models.forward import eval_mode, last_token_scores

log = logging.getLogger(__name__)
REWARD_METHOD = "llmft.methods.reward.RewardModel"


class RewardModelScore:
    """The score head of a finished `method=reward` run on the chat `prompt + response`, rendered with
    its own tokenizer and template as in its training pairs, in batches of `batch_size`."""

    name = "model"

    def __init__(self, run_dir: str, batch_size: int = 16):
        from llmft import models
        from llmft.runs import finished_run, lineage

        run = finished_run(run_dir, key="reward.run_dir")
        target = run.config.method.get("_target_")
        if target != REWARD_METHOD:
            raise ValueError(f"reward.run_dir={run_dir} is a {target} run, not a reward model: train one with "
                             "python train.py method=reward, then pass its run folder")
        cfg = run.config
        *ancestors, saved = lineage(run)
        self.handle = models.load_finished(saved, instantiate(cfg.model), instantiate(cfg.peft),
                                           instantiate(cfg.precision), ancestors, head="score")
        self.handle.model.requires_grad_(False)
        self.handle.head.requires_grad_(False)
        self.renderer = ChatRenderer(self.handle.tokenizer, cfg.data.max_length, chat_template=run.chat_template())
        self.batch_size = batch_size
        self.run_dir = run_dir
        log.info("reward model: %s", run.folder)

    def place(self, device: torch.device) -> None:
        self.handle.place(device)

    @torch.no_grad()
    def __call__(self, completions: list[str], meta: list[dict]) -> list[float]:
        examples, truncated = [], 0
        for completion, m in zip(completions, meta, strict=True):
            chat = list(m["prompt"]) + [{"role": "assistant", "content": completion}]
            ids = self.renderer.encode(chat, m.get("tools")).input_ids
            truncated += len(ids) >= self.renderer.max_length
            examples.append({"input_ids": ids})
        if truncated:  # the head then reads a cut chat: say so, with the count
            log.warning("reward model: %d of %d chats reached its data.max_length=%d and were cut before scoring",
                        truncated, len(examples), self.renderer.max_length)
        model, head = self.handle.model, self.handle.head
        device = next(model.parameters()).device
        scores: list[float] = []
        with eval_mode(model):
            for start in range(0, len(examples), self.batch_size):
                batch = pad_batch(examples[start : start + self.batch_size], self.handle.tokenizer.pad_token_id)
                scores += last_token_scores(model, head, batch["input_ids"].to(device),
                                            batch["attention_mask"].to(device)).float().tolist()
        return scores

    def check_rows(self, rows: list[dict], where: str) -> None:
        for i, row in enumerate(rows):
            if not row.get("prompt"):
                raise ValueError(f"reward=model: {where} row {i} (id {row.get('id', '?')}) has no prompt messages")
