"""Wrapping a base model for training: full fine-tuning, LoRA, or QLoRA (LoRA over a 4-bit base).

A new PEFT method = a spec dataclass here + a branch in `wrap` + `conf/peft/<name>.yaml`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from llmft.models.factory import DTYPES, bf16_is_fast


@dataclass
class FullSpec:
    """`peft=full`: every parameter trains."""

    name: str = "full"
    quantize: str | None = None


@dataclass
class LoraSpec:
    """`peft=lora` / `peft=qlora`. `quantize: nf4` loads the base in 4-bit NF4 first (QLoRA)."""

    name: str = "lora"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    use_dora: bool = False
    quantize: str | None = None
    double_quant: bool = True
    compute_dtype: str = "auto"  # auto = bfloat16 where bf16 matmuls are fast (GPUs), else float32
    modules_to_save: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError(f"peft.r={self.r}: the LoRA rank must be a positive integer")
        if self.quantize not in (None, "nf4", "fp4"):
            raise ValueError(f"peft.quantize={self.quantize!r}: choose null, nf4 or fp4")
        if self.compute_dtype == "auto":
            self.compute_dtype = "bfloat16" if bf16_is_fast() else "float32"
        if self.compute_dtype not in DTYPES:
            raise ValueError(f"peft.compute_dtype={self.compute_dtype!r}: choose one of {sorted(DTYPES)}")


PeftSpec = FullSpec | LoraSpec


def quantization_config(spec: PeftSpec):
    """The bitsandbytes config the base model is loaded with, or None."""
    if spec.quantize is None:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=spec.quantize,
        bnb_4bit_use_double_quant=spec.double_quant,
        bnb_4bit_compute_dtype=DTYPES[spec.compute_dtype],
    )


def wrap(model: PreTrainedModel, spec: PeftSpec, gradient_checkpointing: bool = False) -> torch.nn.Module:
    if isinstance(spec, FullSpec):
        model.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if spec.quantize is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        use_dora=spec.use_dora,
        modules_to_save=list(spec.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def load_adapter(model: PreTrainedModel, adapter_dir: str) -> torch.nn.Module:
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter_dir)


def is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
