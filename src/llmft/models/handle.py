"""The built model a method trains: the policy, its tokenizer, and a handle on the reference model."""
from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from llmft.models import adapters
from llmft.models.forward import eval_mode
from llmft.models.heads import save_head
from llmft.models.provenance import BaseModel, readme


class ModelHandle:
    """What methods receive instead of configs.

    `reference()` yields the frozen reference policy (DPO, KTO, PPO, GRPO need it): for PEFT the same
    module with its adapters disabled (no extra memory), for full fine-tuning a frozen copy taken at
    build time (only when asked for, since it doubles the memory).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, base: BaseModel,
                 with_reference: bool = False, head: torch.nn.Module | None = None, head_kind: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.base = base
        self.head = head  # a scalar head (reward model "score", PPO "value"), trained with the policy
        self.head_kind = head_kind
        self.frozen_copy: torch.nn.Module | None = None
        if with_reference and not self.is_peft:
            self.frozen_copy = copy.deepcopy(model).eval().requires_grad_(False)

    def place(self, device: torch.device | str) -> None:
        """Move the policy (and a frozen reference copy) to `device`: the device training ran on,
        before evaluation, since Lightning's teardown leaves the module on the CPU."""
        for module in (self.model, self.frozen_copy, self.head):
            if module is not None and next(module.parameters()).device != torch.device(device):
                module.to(device)

    def disable_dropout(self) -> int:
        """Set every dropout probability of the policy to 0 (nn.Dropout modules, LoRA dropout and
        attention dropout), so train mode is deterministic. Returns how many were non-zero."""
        changed = 0
        for module in self.model.modules():
            if isinstance(module, torch.nn.Dropout) and module.p > 0:
                module.p, changed = 0.0, changed + 1
            if isinstance(getattr(module, "attention_dropout", None), float) and module.attention_dropout > 0:
                module.attention_dropout, changed = 0.0, changed + 1
        return changed

    @property
    def is_peft(self) -> bool:
        return adapters.is_peft(self.model)

    @contextlib.contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The reference policy, in eval mode and without gradients (the mode is restored after)."""
        if self.is_peft and adapters.frozen_names(self.model):  # QLoRA over a parent run's adapter
            with adapters.only_frozen_active(self.model), torch.no_grad(), eval_mode(self.model):
                yield self.model
        elif self.is_peft:
            with self.model.disable_adapter(), torch.no_grad(), eval_mode(self.model):
                yield self.model
        elif self.frozen_copy is not None:
            with torch.no_grad(), eval_mode(self.frozen_copy):
                yield self.frozen_copy
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
        """(trainable, total) parameter counts, the head included."""
        modules = [m for m in (self.model, self.head) if m is not None]
        total = sum(p.numel() for m in modules for p in m.parameters())
        trainable = sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)
        return trainable, total

    def save(self, out_dir: str | Path) -> Path:
        """Write the adapter (PEFT) or the whole model (full) as safetensors, with the tokenizer and a
        README naming the base portably (see `models.provenance`): no path of this machine is saved.

        Returns the folder: `<out_dir>/adapter` or `<out_dir>/model`.
        """
        kind = "adapter" if self.is_peft else "model"
        target = Path(out_dir) / kind
        selected = {"selected_adapters": [adapters.TRAINED_ADAPTER]} if self.is_peft else {}
        self.model.save_pretrained(target, safe_serialization=True, **selected)  # not the frozen parents
        self.tokenizer.save_pretrained(target)
        if self.is_peft:  # peft needs the local base while saving (it checks the vocabulary), so rename after
            config_file = target / "adapter_config.json"
            config = json.loads(config_file.read_text(encoding="utf-8"))
            config["base_model_name_or_path"] = self.base.id
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (target / "README.md").write_text(readme(self.base, kind), encoding="utf-8")
        if self.head is not None:
            save_head(self.head, self.head_kind, target)
        return target
