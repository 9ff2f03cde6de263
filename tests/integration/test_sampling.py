"""Sampling from the tiny Llama: masks line up with what generate() produced."""
import lightning as L
import torch

from llmft import models
from llmft.models.factory import end_of_turn_ids
from llmft.models.sampling import SamplingSpec, sample


def test_sampled_rows_mask_exactly_their_response():
    handle = models.build(models.ModelSpec("llmft:tiny"), models.FullSpec(), models.PrecisionSpec("32-true"))
    tokenizer = handle.tokenizer
    stop_ids = end_of_turn_ids(tokenizer)
    prompts = [tokenizer("Hello there", add_special_tokens=False)["input_ids"], tokenizer("Hi")["input_ids"]]
    L.seed_everything(0)
    samples = sample(handle.model, prompts, tokenizer.pad_token_id, stop_ids, SamplingSpec(max_new_tokens=12))
    width = samples.prompt_width
    assert width == max(map(len, prompts)) and samples.sequences.shape[1] <= width + 12
    assert not samples.response_mask[:, :width].any()  # the prompt is never part of the response
    for row, prompt in enumerate(prompts):
        assert samples.sequences[row, width - len(prompt):width].tolist() == prompt
        response = samples.sequences[row, width:][samples.response_mask[row, width:].bool()].tolist()
        stops = [i for i, t in enumerate(response) if t in stop_ids]
        assert stops == ([len(response) - 1] if samples.stopped[row] else [])  # through the first stop, no further
        prompt_part = torch.zeros_like(samples.response_mask[row])
        prompt_part[width - len(prompt):width] = 1
        assert torch.equal(samples.attention_mask[row], prompt_part + samples.response_mask[row])
    L.seed_everything(0)
    again = sample(handle.model, prompts, tokenizer.pad_token_id, stop_ids, SamplingSpec(max_new_tokens=12))
    assert torch.equal(again.sequences, samples.sequences)  # seeded: the same draw


def test_greedy_sampling_answers_as_the_evaluation_does_whatever_the_seed():
    """The held-out reward's greedy answers are those of eval.py's greedy decoding, and no seed changes them."""
    from llmft.models.decoding import generate_greedy

    handle = models.build(models.ModelSpec("llmft:tiny"), models.FullSpec(), models.PrecisionSpec("32-true"))
    tokenizer = handle.tokenizer
    texts = ["Hello there", "Hi", "What is 2 + 2?"]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    spec = SamplingSpec(max_new_tokens=10)
    draws = []
    for seed in (0, 1):
        L.seed_everything(seed)
        draws.append(sample(handle.model, prompts, tokenizer.pad_token_id, end_of_turn_ids(tokenizer), spec,
                            greedy=True))
    assert torch.equal(draws[0].sequences, draws[1].sequences)
    width = draws[0].prompt_width
    decoded = [tokenizer.decode(row[width:][m[width:].bool()], skip_special_tokens=True).strip()
               for row, m in zip(draws[0].sequences, draws[0].response_mask)]
    assert decoded == generate_greedy(handle.model, tokenizer, texts, max_new_tokens=10)
