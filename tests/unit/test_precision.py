"""precision=auto: bf16 only where it is fast, never where it is emulated."""
from __future__ import annotations

import pytest
import torch

from llmft.models.factory import PrecisionSpec, bf16_is_fast


def fake_gpu(monkeypatch, native_bf16: bool) -> None:
    """A CUDA device as torch reports it: T4/V100 support bf16 only through emulation."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native_bf16 or including_emulation)


@pytest.mark.parametrize("native", [False, True])
def test_auto_precision_ignores_emulated_bf16(monkeypatch, native):
    fake_gpu(monkeypatch, native)
    assert bf16_is_fast() is native
    assert PrecisionSpec("auto").trainer == ("bf16-mixed" if native else "32-true")


@pytest.mark.gpu
def test_auto_precision_on_this_gpu_matches_its_native_bf16():
    assert bf16_is_fast() == torch.cuda.is_bf16_supported(including_emulation=False)
