"""The built model a method trains: the policy, its tokenizer, and a handle on the reference model."""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from llmft.models import peft as peft_wrap


class ModelHandle:
    """What methods receive instead of configs.

    `reference()` yields the frozen reference policy (DPO, KTO, PPO, GRPO need it): for PEFT the same
    module with its adapters disabled (no extra memory), for full fine-tuning a frozen copy taken at
    build time (only when asked for, since it doubles the memory).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, with_reference: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self._frozen_copy: torch.nn.Module | None = None
        if with_reference and not self.is_peft:
            self._frozen_copy = copy.deepcopy(model).eval().requires_grad_(False)

    @property
    def is_peft(self) -> bool:
        return peft_wrap.is_peft(self.model)

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        if self.is_peft:
            with self.model.disable_adapter(), torch.no_grad():
                yield self.model
        elif self._frozen_copy is not None:
            with torch.no_grad():
                yield self._frozen_copy
        else:
            raise RuntimeError(
                "this full fine-tuning handle was built without a reference copy; "
                "build it with with_reference=True (methods that need one declare needs_reference)"
            )

    @property
    def is_quantized(self) -> bool:
        return getattr(self.model.config, "quantization_config", None) is not None

    @contextlib.contextmanager
    def initial(self) -> Iterator[torch.nn.Module]:
        """The model as built, before training: adapters disabled under PEFT (they start as a no-op),
        else the policy itself, so use it before the first optimizer step."""
        if self.is_peft:
            with self.reference() as model:
                yield model
        else:
            yield self.model

    @contextlib.contextmanager
    def merged(self) -> Iterator[torch.nn.Module]:
        """The policy with its LoRA deltas merged into the base weights, for fast generation.

        On exit the base weights are restored bit-exactly (unmerging alone would leave rounding
        error). A no-op for full fine-tuning and for 4-bit bases (merging there would re-quantize).
        """
        if not self.is_peft or self.is_quantized:
            yield self.model
            return
        originals = {n: p.detach().clone() for n, p in self.model.named_parameters() if ".base_layer." in n}
        self.model.merge_adapter()
        try:
            yield self.model
        finally:
            self.model.unmerge_adapter()
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, value in originals.items():
                    params[name].copy_(value)

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        total = sum(p.numel() for p in self.model.parameters())
        return sum(p.numel() for p in self.trainable_parameters().values()), total

    def save(self, out_dir: str | Path) -> Path:
        """Write the adapter (PEFT) or the whole model (full) as safetensors, with the tokenizer.

        Returns the folder: `<out_dir>/adapter` or `<out_dir>/model`.
        """
        target = Path(out_dir) / ("adapter" if self.is_peft else "model")
        self.model.save_pretrained(target, safe_serialization=True)
        self.tokenizer.save_pretrained(target)
        return target
