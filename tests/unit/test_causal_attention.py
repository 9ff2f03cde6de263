"""`models.attention.causal_attention`: sdpa's forward bit for bit, and its matmul backward against sdpa's."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmft.models.attention import causal_attention, uses_matmul_backward


def inputs(dtype: torch.dtype, heads: int = 6, kv_heads: int = 2, tokens: int = 11, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(3, heads, tokens, 16), (3, kv_heads, tokens, 16), (3, kv_heads, tokens, 16)]
    return [torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype).requires_grad_() for shape in shapes]


def sdpa(q, k, v, scale=None):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=k.shape[1] != q.shape[1])


def gradients(output: torch.Tensor, tensors: list[torch.Tensor], grad_out: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(output, tensors, grad_out))


@pytest.mark.parametrize(("heads", "kv_heads"), [(6, 2), (4, 4)], ids=["grouped", "one kv head a head"])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_float32_values_and_gradients_equal_sdpa_s_to_1e_5(heads, kv_heads, scale):
    tensors = inputs(torch.float32, heads, kv_heads)
    grad_out = torch.randn(3, heads, 11, 16, generator=torch.Generator().manual_seed(1))
    ours = causal_attention(*tensors, scale)
    theirs = sdpa(*tensors, scale)
    assert torch.equal(ours, theirs)
    for mine, reference in zip(gradients(ours, tensors, grad_out), gradients(theirs, tensors, grad_out)):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)


def test_float64_gradients_pass_gradcheck():
    tensors = [t.detach().double().requires_grad_() for t in inputs(torch.float32, tokens=5)]
    assert torch.autograd.gradcheck(lambda q, k, v: causal_attention(q, k, v, None), tensors)


def test_under_bf16_autocast_the_values_are_sdpa_s_and_the_gradients_as_close_to_float32():
    """As in a model: float32 query and key (after the rotary embedding), a bf16 value."""
    q, k, v = inputs(torch.float32, seed=2)
    v = v.detach().to(torch.bfloat16).requires_grad_()
    grad_out = torch.randn(3, 6, 11, 16, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, theirs = causal_attention(q, k, v, None), sdpa(q, k, v)
    assert ours.dtype == theirs.dtype == torch.bfloat16 and torch.equal(ours, theirs)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    exact = gradients(sdpa(q64, k64, v64), [q64, k64, v64], grad_out.double())
    for mine, reference, truth in zip(gradients(ours, [q, k, v], grad_out), gradients(theirs, [q, k, v], grad_out),
                                      exact):
        assert mine.dtype == reference.dtype
        error_mine = (mine.double() - truth).norm() / truth.norm()
        error_flash = (reference.double() - truth).norm() / truth.norm()
        assert error_mine < max(1.5 * error_flash, 1e-2), (error_mine, error_flash)


@pytest.mark.parametrize("extra", [{"position_bias": torch.zeros(1)}, {"is_causal": False}, {"sliding_window": 4},
                                   {"softcap": 30.0}, {"dropout": 0.1}],
                         ids=["position bias", "not causal", "sliding window", "softcap", "dropout"])
def test_what_sdpa_would_have_to_apply_keeps_sdpa(extra):
    q, k, v = inputs(torch.float32)
    module = torch.nn.Module()
    assert uses_matmul_backward(module, q, k, v, None, {"dropout": 0.0, "scaling": None})
    assert not uses_matmul_backward(module, q, k, v, None, {"dropout": 0.0, "scaling": None, **extra})
    assert not uses_matmul_backward(module, q, k, v, torch.ones(1, 1, 11, 11, dtype=torch.bool), {})
    assert not uses_matmul_backward(module, q, k.detach().double(), v, None, {})  # sdpa would refuse mixed dtypes
