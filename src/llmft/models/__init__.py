"""The only room that knows peft, bitsandbytes and transformers model classes."""
from __future__ import annotations

from pathlib import Path

from llmft.models.factory import ModelSpec, PrecisionSpec, load_model, load_tokenizer
from llmft.models.handle import ModelHandle
from llmft.models.peft import FullSpec, LoraSpec, PeftSpec, load_adapter, quantization_config, wrap

__all__ = ["ModelSpec", "PrecisionSpec", "FullSpec", "LoraSpec", "ModelHandle", "build", "load_finished"]


def check_compatible(peft: PeftSpec, precision: PrecisionSpec) -> None:
    """Refuse combinations that cannot work, naming both options."""
    if peft.quantize is not None and (precision.weights_dtype == "float16" or precision.trainer.startswith("16")):
        raise ValueError(
            f"peft={peft.name} (4-bit base, {peft.compute_dtype} compute) cannot train with "
            f"precision {precision.trainer}/{precision.weights_dtype}: fp16 overflows the 4-bit "
            "dequantised activations; use precision=bf16_mixed or precision=fp32"
        )


def build(model: ModelSpec, peft: PeftSpec, precision: PrecisionSpec, with_reference: bool = False) -> ModelHandle:
    """Load the base model + tokenizer, then wrap it for training (full, LoRA or QLoRA)."""
    check_compatible(peft, precision)
    tokenizer = load_tokenizer(model)
    base = load_model(model, tokenizer, precision.dtype, quantization_config(peft))
    wrapped = wrap(base, peft, gradient_checkpointing=model.gradient_checkpointing)
    return ModelHandle(wrapped, tokenizer, with_reference=with_reference)


def load_finished(saved: str | Path, model: ModelSpec, peft: PeftSpec, precision: PrecisionSpec) -> ModelHandle:
    """Rebuild a fine-tuned model from the folder `ModelHandle.save` wrote (`.../adapter` or `.../model`)."""
    saved = Path(saved)
    if saved.name == "model":
        spec = ModelSpec(**{**model.__dict__, "name_or_path": str(saved)})
        tokenizer = load_tokenizer(spec)
        return ModelHandle(load_model(spec, tokenizer, precision.dtype), tokenizer)
    tokenizer = load_tokenizer(model)
    base = load_model(model, tokenizer, precision.dtype, quantization_config(peft))
    return ModelHandle(load_adapter(base, str(saved)), tokenizer)
