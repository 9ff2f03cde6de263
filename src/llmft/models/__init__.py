"""The only room that knows peft, bitsandbytes and transformers model classes."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from llmft.models import provenance
from llmft.models.factory import ModelSpec, PrecisionSpec, compile_layers, load_model, load_tokenizer, local_folder
from llmft.models.handle import ModelHandle
from llmft.models.heads import build_head, load_head
from llmft.models.adapters import (FullSpec, LoraSpec, PeftSpec, keep_4bit_weights_differentiable, load_adapter,
                                   fold_lora_scaling, quantization_config, skip_adapter_input_casts, store_frozen_linears, wrap)

log = logging.getLogger(__name__)

__all__ = ["ModelSpec", "PrecisionSpec", "FullSpec", "LoraSpec", "ModelHandle", "build", "load_finished"]


def check_compatible(peft: PeftSpec, precision: PrecisionSpec) -> None:
    """Refuse combinations that cannot work, naming both options."""
    if peft.quantize is not None and (precision.weights_dtype == "float16" or precision.trainer.startswith("16")):
        raise ValueError(
            f"peft={peft.name} (4-bit base, {peft.compute_dtype} compute) cannot train with "
            f"precision {precision.trainer}/{precision.weights_dtype}: fp16 overflows the 4-bit "
            "dequantised activations; use precision=bf16_mixed or precision=fp32"
        )


def build(model: ModelSpec, peft: PeftSpec, precision: PrecisionSpec, with_reference: bool = False,
          head: str | None = None, lineage: Sequence[Path] = ()) -> ModelHandle:
    """Load the base model + tokenizer, then wrap it for training (full, LoRA or QLoRA).

    `lineage`: the saved folders of the runs this one starts from (`init_from=`), oldest first; the
    model they make is the starting point and so the reference (`load_lineage`)."""
    check_compatible(peft, precision)
    tokenizer = load_tokenizer(model)
    base, frozen = load_lineage(model, tokenizer, precision, peft, lineage)
    wrapped = wrap(base, peft, gradient_checkpointing=model.gradient_checkpointing, frozen_adapters=frozen)
    frozen_linears(wrapped, peft, precision)
    if model.compile:
        log.info("torch.compile: %d decoder layers", compile_layers(wrapped))
    return ModelHandle(wrapped, tokenizer, describe_base(model), with_reference=with_reference,
                       head=build_head(head, base.config.hidden_size), head_kind=head)


def load_lineage(model: ModelSpec, tokenizer, precision: PrecisionSpec, peft: PeftSpec,
                 lineage: Sequence[Path]) -> tuple[torch.nn.Module, list[Path]]:
    """(the base with earlier runs applied, adapters to keep frozen on top of it).

    The latest full model of the lineage (or the base), then every later adapter merged into it, in
    order: under LoRA "adapter disabled" is then the parent model. A 4-bit base cannot take merged
    adapters (merging would re-quantize), so under QLoRA the parents' adapters stay as frozen
    adapters under the trained one, and the reference is the base with only those active."""
    lineage = [Path(p) for p in lineage]
    full = [i for i, p in enumerate(lineage) if p.name == "model"]
    start = full[-1] if full else -1
    spec = ModelSpec(**{**model.__dict__, "name_or_path": str(lineage[start])}) if full else model
    adapters = lineage[start + 1:]
    base = load_model(spec, tokenizer, precision.dtype, quantization_config(peft))
    if peft.quantize is not None:
        keep_4bit_weights_differentiable(base)
        return base, adapters
    for adapter in adapters:
        base = load_adapter(base, str(adapter)).merge_and_unload()
    return base, []


def frozen_linears(model: torch.nn.Module, peft: PeftSpec, precision: PrecisionSpec) -> None:
    """A LoRA base's frozen Linear weights in the autocast dtype (`PrecisionSpec.frozen_linear_dtype`), no
    float32 copy of the adapters' inputs (`skip_adapter_input_casts`), and the LoRA scaling folded into
    `lora_B` (`fold_lora_scaling`): bit for bit the same training, in fewer passes over the activations."""
    if peft.quantize is not None or isinstance(peft, FullSpec):
        return
    dtype = precision.frozen_linear_dtype
    if dtype is not None:
        log.info("%d frozen Linear weights stored in %s (autocast's dtype)", store_frozen_linears(model, dtype), dtype)
        skip_adapter_input_casts(model)
    fold_lora_scaling(model)


def describe_base(model: ModelSpec) -> provenance.BaseModel:
    return provenance.describe(model.name_or_path, local_folder(model))


def load_finished(saved: str | Path, model: ModelSpec, peft: PeftSpec, precision: PrecisionSpec,
                  lineage: Sequence[Path] = (), head: str | None = None) -> ModelHandle:
    """Rebuild a fine-tuned model from the folder `ModelHandle.save` wrote (`.../adapter` or `.../model`),
    on the model its lineage (`init_from=` parents, oldest first) started from, with its saved head."""
    handle = _load_finished(Path(saved), model, peft, precision, lineage)
    if head is not None:
        handle.head, handle.head_kind = load_head(head, saved, handle.model.config.hidden_size), head
    return handle


def _load_finished(saved: Path, model: ModelSpec, peft: PeftSpec, precision: PrecisionSpec,
                   lineage: Sequence[Path]) -> ModelHandle:
    saved = Path(saved)
    base_info = describe_base(model)
    provenance.check_base(saved, base_info)  # warns when this machine's base has other weights
    if saved.name == "model":
        spec = ModelSpec(**{**model.__dict__, "name_or_path": str(saved)})
        tokenizer = load_tokenizer(spec)
        return ModelHandle(load_model(spec, tokenizer, precision.dtype), tokenizer, base_info)
    tokenizer = load_tokenizer(model)
    base, frozen = load_lineage(model, tokenizer, precision, peft, lineage)
    adapted = load_adapter(base, str(saved), frozen)
    frozen_linears(adapted, peft, precision)
    return ModelHandle(adapted, tokenizer, base_info)
