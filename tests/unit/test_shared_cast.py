"""`models.shared_cast.autocast_input`: one autocast copy of an activation, an alias per reader, gradients
summed in float32 as autocast's own casts sum them."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from llmft.models.shared_cast import autocast_input


def activation() -> torch.Tensor:
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0)).requires_grad_()
    return x, x * 2  # a non-leaf, as a layer's input is (autocast caches casts of leaves only)


def test_one_copy_with_autocast_s_values_shared_by_the_readers():
    _, y = activation()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first, second = autocast_input(y), autocast_input(y)
    assert first.dtype == torch.bfloat16 and torch.equal(first, y.detach().to(torch.bfloat16))
    assert first is not second and first.untyped_storage().data_ptr() == second.untyped_storage().data_ptr()
    with torch.no_grad():
        y.mul_(3)  # changed in place: cast again
    with torch.autocast("cpu", dtype=torch.bfloat16):
        third = autocast_input(y)
    assert torch.equal(third, y.detach().to(torch.bfloat16))
    assert third.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()


def test_nothing_to_cast_is_returned_as_it_is():
    _, y = activation()
    assert autocast_input(y) is y  # no autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = y.detach().to(torch.bfloat16)
        assert autocast_input(half) is half
        wide = y.detach().double()
        assert autocast_input(wide) is wide


def readers_loss(y: torch.Tensor, share: bool, weights: list[torch.Tensor]) -> torch.Tensor:
    """Three frozen bf16 projections and three trainable ones reading y, as q, k, v and their lora_A do."""
    total = 0
    for frozen, trainable in zip(weights[:3], weights[3:]):
        total = total + F.linear(autocast_input(y) if share else y, frozen).float().sum()
        total = total + F.linear(autocast_input(y) if share else y, trainable).float().pow(2).sum()
    return total


def test_gradients_equal_autocast_s_own_casts_bit_for_bit():
    generator = torch.Generator().manual_seed(1)
    weights = [torch.randn(4, 8, generator=generator).to(torch.bfloat16) for _ in range(3)]
    weights += [torch.randn(2, 8, generator=generator).requires_grad_() for _ in range(3)]
    results = []
    for share in (True, False):
        x, y = activation()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = readers_loss(y, share, weights)
        loss.backward()
        results.append((loss.detach(), x.grad.clone(), [w.grad.clone() for w in weights[3:]]))
        for w in weights[3:]:
            w.grad = None
    (shared_loss, shared_grad, shared_w), (plain_loss, plain_grad, plain_w) = results
    assert torch.equal(shared_loss, plain_loss)
    assert torch.equal(shared_grad, plain_grad)  # each alias casts its own gradient: summed in float32
    assert all(torch.equal(a, b) for a, b in zip(shared_w, plain_w))


def test_inference_tensors_a_changed_copy_and_compiled_code():
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        frozen = torch.randn(3, 4) * 2
        assert autocast_input(frozen) is frozen  # no version counter to key a copy by
    _, y = activation()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        copy = autocast_input(y)
        copy.zero_()  # a reader writing into its input: the next one gets a fresh cast
        assert torch.equal(autocast_input(y), y.to(torch.bfloat16))

    def two_readers(y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return F.linear(autocast_input(y), w) + F.linear(autocast_input(y), w)

    torch._dynamo.reset()
    explained = torch._dynamo.explain(two_readers)(y.detach(), torch.randn(2, 8).to(torch.bfloat16))
    assert explained.graph_break_count == 0
