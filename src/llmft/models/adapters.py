"""Wrapping a base model for training: full fine-tuning, LoRA, or QLoRA (LoRA over a 4-bit base).

A new PEFT method = a spec dataclass here + a branch in `wrap` + `conf/peft/<name>.yaml`.
"""
from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from llmft.models.factory import DTYPES, bf16_is_fast
from llmft.models.shared_cast import autocast_input


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


def wrap(model: PreTrainedModel, spec: PeftSpec, gradient_checkpointing: bool = False,
         frozen_adapters: Sequence[Path] = ()) -> torch.nn.Module:
    """The model to train: every weight (full), or a fresh LoRA adapter. `frozen_adapters` (QLoRA
    over a parent run's adapter) are loaded first, frozen and kept active under the new one."""
    if isinstance(spec, FullSpec):
        model.requires_grad_(True)
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if spec.quantize is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    if not frozen_adapters:
        return get_peft_model(model, lora_config(spec))
    stacked = stack_frozen(model, frozen_adapters)
    stacked.add_adapter(TRAINED_ADAPTER, lora_config(spec))
    activate(stacked, trainable=TRAINED_ADAPTER)
    return stacked


def store_frozen_linears(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Store every frozen base Linear under a LoRA layer in `dtype` (`PrecisionSpec.frozen_linear_dtype`);
    a weight shared with another module (tied embeddings) keeps its dtype. Returns how many were cast."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    shared = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    cast = 0
    for module in model.modules():
        base = getattr(module, "base_layer", None) if isinstance(module, BaseTunerLayer) else None
        if (isinstance(base, torch.nn.Linear) and not base.weight.requires_grad and id(base.weight) not in shared
                and base.weight.dtype != dtype):
            base.to(dtype)
            cast += 1
    return cast


def skip_adapter_input_casts(model: torch.nn.Module) -> int:
    """Under autocast: peft casts a LoRA layer's input to the adapter weights' dtype (float32) before
    `lora_A`, and autocast casts it straight back to bf16/fp16 for the matmul, two copies of an
    activation that change no value (bf16 -> float32 -> bf16 is exact). Turned off (peft's
    `cast_input_dtype_enabled`) only for mixed precision and only on plain LoRA layers without dropout:
    dropout would scale a bf16 input by a rounded 1/(1-p), and DoRA (a peft `lora_variant`) would form
    its weight norm in bf16.
    Returns how many layers."""
    from peft.tuners.lora import LoraLayer

    def plain(layer: LoraLayer) -> bool:
        no_dropout = all(isinstance(d, torch.nn.Identity) for d in layer.lora_dropout.values())
        return no_dropout and not getattr(layer, "lora_variant", None)  # DoRA and other variants keep the cast

    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and plain(m)]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    return len(layers)


def is_power_of_two(value: float) -> bool:
    mantissa, _ = math.frexp(value)
    return value > 0 and mantissa == 0.5


def plain_lora_forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """peft's `lora.Linear.forward` for plain adapters whose scaling is a power of two (alpha / r = 2 by
    default), in fewer passes over the [tokens, out_features] activations: the scaling is folded into
    `lora_B`'s weight (an exact multiplication, so every rounding is the one of `lora_B(h) * scaling`) and
    the update is added in place to the base output (which the base's backward does not keep). The same
    values and gradients bit for bit in float32 and bf16, without the scaled copy, its backward multiplication
    and the sum's allocation. Anything else (fp16, merged, disabled, mixed adapters, dropout, variants, bias)
    is peft's."""
    names = [name for name in layer.active_adapters if name in layer.lora_A]
    if (args or kwargs or layer.disable_adapters or layer.merged or in_float16(x)
            or not all(_foldable(layer, name) for name in names)):
        return type(layer).forward(layer, x, *args, **kwargs)
    # one cast of x shared with the other layers reading it (q, k, v; gate, up), an alias for each reader
    result = layer.base_layer(autocast_input(x))
    for name in names:
        lora_A = layer.lora_A[name]
        update = F.linear(lora_A(autocast_input(layer._cast_input_dtype(x, lora_A.weight.dtype))),
                          layer.lora_B[name].weight * layer.scaling[name])
        if update.dtype != result.dtype:
            return type(layer).forward(layer, x)
        result.add_(update)
    return result


def in_float16(x: torch.Tensor) -> bool:
    """fp16 (autocast or weights): a folded weight below fp16's smallest normal rounds otherwise, and the
    loss-scaled gradient would overflow at another point, so fp16 keeps peft's order of operations."""
    device = x.device.type
    return x.dtype == torch.float16 or (torch.is_autocast_enabled(device)
                                        and torch.get_autocast_dtype(device) == torch.float16)


def _foldable(layer, name: str) -> bool:
    return (isinstance(layer.lora_dropout[name], torch.nn.Identity) and name not in layer.lora_variant
            and layer.lora_B[name].bias is None and is_power_of_two(float(layer.scaling[name])))


def fold_lora_scaling(model: torch.nn.Module) -> int:
    """Give every plain LoRA Linear over an `nn.Linear` `plain_lora_forward`. Returns how many layers."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    layers = [m for m in model.modules() if type(m) is LoraLinear and type(m.base_layer) is torch.nn.Linear]
    for layer in layers:
        layer.forward = types.MethodType(plain_lora_forward, layer)
    return len(layers)


def keep_4bit_weights_differentiable(model: torch.nn.Module) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a 4-bit weight in place, for good, the
    first time its layer runs in eval mode without grad (sampling, the reference forward, validation);
    its matmul then goes through an inference-only kernel that passes no gradient back to the layer's
    input, so training after that would see every 4-bit layer as a dead end (LoRA adapters below it
    stop learning). Every 4-bit base keeps the differentiable layout, so that a loaded run also
    computes as its training reference did."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def lora_config(spec: LoraSpec):
    from peft import LoraConfig

    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        use_dora=spec.use_dora,
        modules_to_save=list(spec.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )


TRAINED_ADAPTER = "default"  # peft's name for the adapter saved at the folder's root


def frozen_names(model) -> list[str]:
    """The frozen parent adapters of a stacked model (`parent0`, `parent1`, ...), oldest first."""
    return sorted((n for n in model.peft_config if n.startswith("parent")), key=lambda n: int(n[len("parent"):]))


def stack_frozen(model: PreTrainedModel, adapter_dirs: Sequence[Path]):
    """A PeftModel with the given adapters loaded, frozen, as `parent0`, `parent1`, ..."""
    from peft import PeftModel

    stacked = PeftModel.from_pretrained(model, str(adapter_dirs[0]), adapter_name="parent0", is_trainable=False)
    for i, folder in enumerate(adapter_dirs[1:], start=1):
        stacked.load_adapter(str(folder), adapter_name=f"parent{i}", is_trainable=False)
    return stacked


def activate(model, trainable: str) -> None:
    """Make the frozen parents and `trainable` the active adapters; only `trainable` trains."""
    model.base_model.set_adapter(frozen_names(model) + [trainable], inference_mode=False)
    model.set_requires_grad(frozen_names(model), requires_grad=False)


@contextlib.contextmanager
def only_frozen_active(model) -> Iterator[None]:
    """Inside: only the frozen parent adapters are active (the parent model, the reference).
    After: the trained adapter is active again, trainable exactly if it was before."""
    trainable = any(p.requires_grad for n, p in model.named_parameters() if f".{TRAINED_ADAPTER}." in n)
    model.base_model.set_adapter(frozen_names(model), inference_mode=True)
    try:
        yield
    finally:
        if trainable:
            activate(model, TRAINED_ADAPTER)
        else:
            model.base_model.set_adapter(frozen_names(model) + [TRAINED_ADAPTER], inference_mode=True)


def load_adapter(model: PreTrainedModel, adapter_dir: str, frozen_adapters: Sequence[Path] = ()) -> torch.nn.Module:
    """A trained adapter on `model` (over its frozen parents, if any), for inference."""
    from peft import PeftModel

    if not frozen_adapters:
        return PeftModel.from_pretrained(model, adapter_dir)
    stacked = stack_frozen(model, frozen_adapters)
    stacked.load_adapter(adapter_dir, adapter_name=TRAINED_ADAPTER, is_trainable=False)
    stacked.base_model.set_adapter(frozen_names(stacked) + [TRAINED_ADAPTER], inference_mode=True)
    return stacked


def is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
