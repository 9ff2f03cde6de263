"""linear_token_logps: the chunked projection + log-softmax against the plain one, by hand and by gradcheck."""
from __future__ import annotations

import math

import pytest
import torch

from llmft.losses import linear_logps, token_logps
from llmft.losses.linear_logps import linear_token_logps


def plain(hidden, weight, targets, bias=None):
    logits = torch.nn.functional.linear(hidden, weight, bias)
    return torch.log_softmax(logits.float() if logits.dtype != torch.float64 else logits, -1).gather(
        -1, targets.unsqueeze(-1)).squeeze(-1)


def test_a_hand_computed_value():
    hidden = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # logits: [1, 0, 0] and [0, 2, 0]
    out = linear_token_logps(hidden, weight, torch.tensor([0, 2]), chunk_rows=1)
    expected = [1 - math.log(math.e + 2), 0 - math.log(2 + math.e ** 2)]
    torch.testing.assert_close(out, torch.tensor(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize("trainable_weight", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gradcheck_in_float64(trainable_weight, with_bias):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(13, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(11, 6, dtype=torch.float64, generator=generator, requires_grad=trainable_weight)
    bias = torch.randn(11, dtype=torch.float64, generator=generator, requires_grad=trainable_weight)
    targets = torch.randint(0, 11, (13,), generator=generator)
    inputs = (hidden, weight) + ((bias,) if with_bias else ())

    def logps(h, w, *b):
        return linear_token_logps(h, w, targets, b[0] if b else None, chunk_rows=4)

    assert torch.autograd.gradcheck(logps, inputs)


@pytest.mark.parametrize("trainable_weight", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 7, 1024])
def test_values_and_gradients_equal_the_plain_path_to_1e_5(trainable_weight, chunk_rows):
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(40, 32, generator=generator)
    weight = 0.3 * torch.randn(500, 32, generator=generator)
    targets = torch.randint(0, 500, (40,), generator=generator)
    upstream = torch.randn(40, generator=generator)  # a loss that weighs tokens differently (DPO, KTO)
    results = []
    for fn in (plain, lambda h, w, t: linear_token_logps(h, w, t, chunk_rows=chunk_rows)):
        h = hidden.clone().requires_grad_()
        w = weight.clone().requires_grad_(trainable_weight)
        out = fn(h, w, targets)
        (out * upstream).sum().backward()
        results.append((out.detach(), h.grad, w.grad))
    (ref, ref_h, ref_w), (got, got_h, got_w) = results
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_h, ref_h, rtol=0, atol=1e-5)
    if trainable_weight:
        torch.testing.assert_close(got_w, ref_w, rtol=0, atol=1e-5)
    else:
        assert got_w is None


def test_bf16_autocast_matches_the_plain_autocast_path():
    """Under autocast the matmul runs in bf16 and the softmax in float32, as `nn.Linear` + `token_logps` do."""
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(24, 64, generator=generator)
    weight = 0.2 * torch.randn(300, 64, generator=generator)
    targets = torch.randint(0, 300, (24,), generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_token_logps(hidden, weight, targets, chunk_rows=5)
        logits = torch.nn.functional.linear(hidden, weight)
    labels = torch.cat([torch.full((1,), -100), targets]).unsqueeze(0)  # token_logps shifts by one
    ref = token_logps(torch.cat([logits, logits[:1]]).unsqueeze(0), labels)[0, 1:]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_no_gradient_is_prepared_without_autograd():
    hidden, weight = torch.randn(5, 4), torch.randn(9, 4)
    with torch.no_grad():
        out = linear_token_logps(hidden, weight, torch.zeros(5, dtype=torch.long))
    assert out.shape == (5,) and not out.requires_grad


@pytest.mark.parametrize("hidden, weight, targets, message", [
    (torch.randn(3, 4, 1), torch.randn(9, 4), torch.zeros(3, dtype=torch.long), "hidden \\[N, H\\]"),
    (torch.randn(3, 4), torch.randn(9, 5), torch.zeros(3, dtype=torch.long), "weight \\[V, H\\]"),
    (torch.randn(3, 4), torch.randn(9, 4), torch.zeros(2, dtype=torch.long), "targets \\[N\\]"),
])
def test_shapes_that_do_not_fit_are_refused(hidden, weight, targets, message):
    with pytest.raises(ValueError, match=message):
        linear_token_logps(hidden, weight, targets)


def test_a_trainable_bias_under_bf16_autocast_matches_the_plain_path():
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(20, 32, generator=generator)
    weight = 0.2 * torch.randn(200, 32, generator=generator)
    bias = torch.randn(200, generator=generator)
    targets = torch.randint(0, 200, (20,), generator=generator)
    results = []
    for chunked in (False, True):
        h, w, b = (t.clone().requires_grad_() for t in (hidden, weight, bias))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = linear_token_logps(h, w, targets, b, chunk_rows=6) if chunked else plain(h, w, targets, b)
        out.sum().backward()
        results.append((out.detach(), h.grad, w.grad, b.grad))
    for got, ref in zip(results[1], results[0]):
        assert float((got.float() - ref.float()).norm()) <= 0.02 * float(ref.float().norm())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_probs_equal_torch_logsumexp_s_bit_for_bit(dtype):
    """The forward runs logsumexp's own steps in place (the softmax reuses exp(x - max)): the same values."""
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(9, 6, generator=generator, dtype=dtype)
    weight = torch.randn(11, 6, generator=generator, dtype=dtype)
    bias = torch.randn(11, generator=generator, dtype=dtype)
    bias[4] = -math.inf  # a token that can never be produced
    targets = torch.randint(0, 11, (9,), generator=generator)
    targets[targets == 4] = 5
    logits = hidden @ weight.t() + bias
    expected = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    assert torch.equal(linear_token_logps(hidden, weight, targets, bias=bias), expected)


def test_a_cpu_chunk_of_logits_stays_under_glibcs_mmap_threshold():
    """A CPU chunk's float32 logits under 32 MiB (served from the heap, not a fresh mapping every call);
    elsewhere, and for small vocabularies, `DEFAULT_CHUNK_ROWS`."""
    smollm2, llama3 = torch.empty(49152, 8), torch.empty(128256, 8)
    for hidden, weight in ((torch.empty(2, 8, dtype=torch.bfloat16), smollm2), (torch.empty(2, 8), llama3),
                           (torch.empty(2, 8, dtype=torch.float64), smollm2)):
        rows = linear_logps.default_chunk_rows(hidden, weight)
        row_bytes = weight.shape[0] * torch.promote_types(hidden.dtype, torch.float32).itemsize
        assert rows * row_bytes <= linear_logps.CPU_CHUNK_BYTES < (rows + 1) * row_bytes  # the most that fit
    assert linear_logps.CPU_CHUNK_BYTES < 32 << 20
    assert linear_logps.default_chunk_rows(torch.empty(2, 8), torch.empty(100, 8)) == linear_logps.DEFAULT_CHUNK_ROWS
    assert linear_logps.default_chunk_rows(torch.empty(2, 8, device="meta"), smollm2) == linear_logps.DEFAULT_CHUNK_ROWS
