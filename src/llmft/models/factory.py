"""Load a base model and its tokenizer: a Hub id, a local folder, or an embedded `llmft:` name."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from llmft.models import attention, embedded

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# End-of-turn tokens of common chat templates; the pad token must be none of them, or padding
# logic elsewhere could mask the end of an assistant turn out of the labels.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>")
PAD_CANDIDATES = ("<|pad|>", "<pad>", "<|endoftext|>", "<unk>")


@dataclass
class ModelSpec:
    """`conf/model/*.yaml`. `name_or_path`: Hub id, local folder, or `llmft:smollm2-135m-instruct` / `llmft:tiny`."""

    name_or_path: str
    revision: str | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = None  # None = transformers' default; sdpa becomes llmft_sdpa (models.attention)
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile each decoder layer (`compile_layers`)


@dataclass
class PrecisionSpec:
    """`conf/precision/*.yaml`: the Lightning precision flag and the dtype the weights are loaded in."""

    trainer: str = "auto"
    weights_dtype: str = "float32"
    frozen_linears: str = "auto"  # auto | float32: see `frozen_linear_dtype`

    def __post_init__(self) -> None:
        if self.trainer == "auto":
            self.trainer = "bf16-mixed" if bf16_is_fast() else "32-true"
        if self.weights_dtype not in DTYPES:
            raise ValueError(f"precision.weights_dtype={self.weights_dtype!r}: choose one of {sorted(DTYPES)}")
        if self.frozen_linears not in ("auto", "float32"):
            raise ValueError(f"precision.frozen_linears={self.frozen_linears!r}: choose auto or float32")

    @property
    def frozen_linear_dtype(self) -> torch.dtype | None:
        """The dtype a LoRA base's frozen Linear weights are stored in, or None to keep `dtype`.

        Under mixed precision autocast casts every Linear weight to its dtype on every forward; a frozen
        weight never changes, so it is stored cast once (`frozen_linears: auto`): the same values reach
        the matmuls (training computes bit for bit as before), without the per-forward copy and with
        half the memory. Embeddings, norms and the trained weights stay in `dtype`."""
        mixed = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(self.trainer)
        if self.frozen_linears == "float32" or mixed is None or self.dtype != torch.float32:
            return None
        return mixed

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.weights_dtype]


def bf16_is_fast() -> bool:
    """bf16 matmuls beat fp32 on CUDA GPUs with bf16 support and on CPUs with bf16 matrix units
    (AVX512-BF16 or AMX); on other CPUs (AVX2 only) bf16 autocast is several times *slower*."""
    if torch.cuda.is_available():
        # including_emulation=False: T4 / V100 "support" bf16 only by emulation, far slower than fp16
        return torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def local_source(spec: ModelSpec) -> str:
    """Resolve embedded names and reject a local path that does not exist, before any loading."""
    source = embedded.resolve(spec.name_or_path)
    looks_local = source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()
    if looks_local and not Path(source).expanduser().is_dir():
        raise FileNotFoundError(
            f"model.name_or_path={spec.name_or_path!r}: no such folder "
            "(give an existing local model folder, a Hub id, or llmft:smollm2-135m-instruct / llmft:tiny)"
        )
    return str(Path(source).expanduser()) if looks_local else source


def local_folder(spec: ModelSpec) -> str | None:
    """The local folder the weights load from: the resolved path, or a Hub id's cached snapshot
    (None when the Hub id is not in the local cache)."""
    source = local_source(spec)
    if Path(source).is_dir():
        return source
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(source, revision=spec.revision, local_files_only=True)
    except Exception:  # not cached, or not a valid repo id: the hash is then unknown, never an error
        return None


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    source = local_source(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )
    except OSError as err:
        raise OSError(f"model.name_or_path={spec.name_or_path!r}: cannot load its tokenizer: {err}") from err
    if tokenizer.chat_template is None:
        raise ValueError(f"model.name_or_path={spec.name_or_path!r}: the tokenizer has no chat template")
    _ensure_safe_pad_token(tokenizer)
    tokenizer.padding_side = "right"
    return tokenizer


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    vocab = tokenizer.get_vocab()
    ids = {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _ensure_safe_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token distinct from every end-of-turn token."""
    forbidden = end_of_turn_ids(tokenizer)
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in forbidden:
        return
    vocab = tokenizer.get_vocab()
    for candidate in PAD_CANDIDATES:
        if candidate in vocab and vocab[candidate] not in forbidden:
            tokenizer.pad_token = candidate
            return
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})  # the model's embeddings are resized on load


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Non-reentrant activation checkpointing, under transformers' current name where it has one."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_model(
    spec: ModelSpec,
    tokenizer: PreTrainedTokenizerBase,
    dtype: torch.dtype,
    quantization_config=None,
) -> PreTrainedModel:
    source = local_source(spec)
    kwargs = dict(
        revision=spec.revision,
        trust_remote_code=spec.trust_remote_code,
        dtype=dtype,
        quantization_config=quantization_config,
    )
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    if quantization_config is not None:
        kwargs["device_map"] = {"": torch.cuda.current_device() if torch.cuda.is_available() else "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as err:
        raise OSError(f"model.name_or_path={spec.name_or_path!r}: cannot load the model: {err}") from err
    if model.config._attn_implementation == "sdpa" and not spec.attn_implementation:
        model.set_attn_implementation(attention.NAME)  # sdpa, and per-document attention for packed rows
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if spec.gradient_checkpointing:
        enable_checkpointing(model)
        model.config.use_cache = False
    log.info("loaded %s (%s, %.1fM parameters)", spec.name_or_path, dtype, model.num_parameters() / 1e6)
    return model


def compile_layers(model: torch.nn.Module) -> int:
    """torch.compile every decoder layer in place, for any sequence length (`dynamic=True`): regional
    compilation, one small graph shared by the identical layers, so it compiles in seconds, not minutes.
    Embeddings, the output layer, the losses and the data path stay eager. Returns the number of layers."""
    layers = model.get_decoder().layers
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
