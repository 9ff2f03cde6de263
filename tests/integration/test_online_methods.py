"""PPO, GRPO and RLOO on the tiny model: what trains, what stays, what is logged, and the layout check."""
from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from llmft import models
from llmft.methods.online import _prompts
from llmft.models.forward import response_forward
from llmft.models.heads import load_head
from llmft.train import run
from tests.integration.observe import logged, run_checking_what_trains, snapshot

# One iteration of 4 responses of at most 6 tokens; the reward prefers short responses, so it varies.
FAST = ("model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=1", "data.limit_train=8",
        "method.rollout_size=4", "method.micro_batch_size=2", "method.sampling.max_new_tokens=6", "optim.lr=1e-2",
        "reward=function", "reward.fn=test_online_methods.shorter_is_better")
GROUPS = {"ppo": 1, "grpo": 2, "rloo": 2}
LOGGED = ("reward", "reward_std", "kl", "approx_kl", "entropy", "clip_ratio", "completions/mean_length",
          "completions/stopped", "optimizer_steps", "loss", "grad_norm")
PPO_LOGGED = ("value/loss", "value/clipfrac", "value/explained_variance", "kl_coef")


def shorter_is_better(completions: list[str], meta: list[dict]) -> list[float]:
    """A reward any random model's responses differ on: minus the response's length in characters."""
    return [-len(c) / 10 for c in completions]


@pytest.mark.parametrize("peft", ["full", "lora", "qlora"])
@pytest.mark.parametrize("method", list(GROUPS))
def test_online_method_trains_the_trainable_and_nothing_else(make_cfg, tmp_path, method, peft):
    # two optimizer steps at least: a fresh LoRA B is zero, so its A first moves in the second step
    cfg = make_cfg(*FAST, f"method={method}", f"peft={peft}", f"method.group_size={GROUPS[method]}",
                   "method.minibatches=2")
    result, head_before = run_checking_what_trains(cfg)
    handle = result["handle"]
    rows = logged(tmp_path)
    train = [r for r in rows if r.get("train/loss")]
    assert len(train) == 1 and math.isfinite(float(train[0]["train/loss"]))
    names = LOGGED + (PPO_LOGGED if method == "ppo" else ())
    assert all(train[0][f"train/{n}"] != "" for n in names), [n for n in names if not train[0][f"train/{n}"]]
    assert float(train[0]["train/optimizer_steps"]) == (4 if method == "ppo" else 2)  # epochs x minibatches
    assert any(k.startswith("train/reward/") and v for r in rows for k, v in r.items())  # per task
    heldout = [r for r in rows if r.get("val/reward")]
    assert [int(r["step"]) for r in heldout] == [0, 1]  # start and end (the middle is the end here)
    assert any(k.startswith("val/reward/") for k in heldout[0])
    assert result["card"]["heldout_reward"][0]["iteration"] == 0
    with open(tmp_path / "samples.csv") as handle_csv:
        samples = list(csv.DictReader(handle_csv))
    assert {s["iteration"] for s in samples} == {"0", "1"} and {"response", "reward", "task"} <= set(samples[0])
    if method == "ppo":  # the value head trains, is saved beside the policy and reloads
        assert all(not torch.equal(p, head_before[n]) for n, p in snapshot(handle.head).items())
        folder = tmp_path / "checkpoints" / ("model" if peft == "full" else "adapter")
        reloaded = load_head("value", folder, handle.model.config.hidden_size)
        assert all(torch.equal(p, dict(handle.head.named_parameters())[n].cpu())
                   for n, p in reloaded.named_parameters())


def same_reward(completions: list[str], meta: list[dict]) -> list[float]:
    return [1.0] * len(completions)


def test_grpo_skips_groups_whose_rewards_are_all_equal_and_still_counts_its_steps(make_cfg, tmp_path):
    """Every group uniform: nothing to learn from, so no forward or backward and the policy stays
    bit-identical; the optimizer steps still count (the schedule and max_steps are in them)."""
    cfg = make_cfg(*FAST, "method=grpo", "peft=lora", "method.group_size=2", "trainer.max_steps=2",
                   "reward.fn=test_online_methods.same_reward")
    L.seed_everything(cfg.seed, workers=True)
    before = snapshot(models.build(instantiate(cfg.model), instantiate(cfg.peft), instantiate(cfg.precision)).model)
    result = run(cfg)
    assert all(torch.equal(p, before[n]) for n, p in snapshot(result["handle"].model).items())
    assert result["card"]["optimizer_steps"] == 2
    train = [r for r in logged(tmp_path) if r.get("train/loss")]
    assert [float(r["train/frac_reward_zero_std"]) for r in train] == [1.0, 1.0]


def test_ppo_with_a_separate_value_model_trains_and_saves_it_beside_the_policy(make_cfg, tmp_path):
    """method.value_model=true: the policy has no head; a second model (its own LoRA and value head) gives
    the values, trains with the value loss, and is saved in checkpoints/value_model/."""
    from safetensors.torch import load_file

    cfg = make_cfg(*FAST, "method=ppo", "peft=lora", "method.value_model=true", "method.minibatches=2")
    spec = (instantiate(cfg.model), instantiate(cfg.peft), instantiate(cfg.precision))
    L.seed_everything(cfg.seed, workers=True)  # as run() builds them: the policy, then the value model
    policy_before = snapshot(models.build(*spec).model)
    critic = models.build(*spec, head="value")
    critic_before, head_before = snapshot(critic.model), snapshot(critic.head)
    result = run(cfg)
    policy = result["handle"]
    assert policy.head is None
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    changed = {n for n, p in snapshot(policy.model).items() if not torch.equal(p, policy_before[n])}
    assert changed == trainable
    saved = tmp_path / "checkpoints" / "value_model" / "adapter"
    head = load_head("value", saved, policy.model.config.hidden_size)
    assert all(not torch.equal(p, head_before[n]) for n, p in head.named_parameters())
    adapter = load_file(str(saved / "adapter_model.safetensors"))
    lora_b = [k for k in adapter if "lora_B" in k]
    assert lora_b and all(adapter[k].abs().sum() > 0 for k in lora_b)  # B starts at zero: the critic's LoRA moved
    assert not any("lora_B" in n and p.abs().sum() > 0 for n, p in critic_before.items())
    assert not (tmp_path / "checkpoints" / "adapter" / "value_head.safetensors").exists()
    train = [r for r in logged(tmp_path) if r.get("train/loss")]
    assert all(train[0][f"train/{n}"] != "" for n in PPO_LOGGED)


def test_ppo_with_zero_lr_keeps_the_policy_and_recomputes_the_old_logps(make_cfg, tmp_path):
    """The consistency check that catches layout bugs: the loss's forward, on reshuffled, re-trimmed
    micro-batches in train mode, gives the rollout's old log-probs; and lr 0 leaves the policy as it was."""
    cfg = make_cfg(*FAST, "method=ppo", "peft=lora", "optim.lr=0", "method.sampling.max_new_tokens=8")
    L.seed_everything(cfg.seed, workers=True)
    built = models.build(instantiate(cfg.model), instantiate(cfg.peft), instantiate(cfg.precision), head="value")
    before = snapshot(built.model)
    result = run(cfg)
    assert all(torch.equal(p, before[n]) for n, p in snapshot(result["handle"].model).items())
    start, end = result["card"]["heldout_reward"]  # greedy answers of an unchanged policy: the same rewards
    assert end["change"]["diff"] == end["change"]["low"] == end["change"]["high"] == 0.0
    assert end["reward"] == start["reward"]

    method = instantiate(cfg.method)(handle=built, optimizer=instantiate(cfg.optim), reward=instantiate(cfg.reward))
    datamodule_rows = [r for r in built.tokenizer("What is 2 + 2?\nSay hi.\nName a colour.\nCount to 3.").input_ids]
    prompts = [datamodule_rows[: 3 + i] for i in range(4)]  # different lengths: left padding differs per row
    meta = [{"task": "arithmetic", "answer": "4", "id": str(i)} for i in range(4)]
    L.seed_everything(0)
    rollout = method.make_rollout(prompts, meta)
    method.compute_advantages(rollout)
    assert rollout.old_logps is not None and rollout.values is not None
    built.model.train()
    for rows in ([3, 0], [1], [2, 1, 0]):
        part = rollout.select(rows)
        logps, values, _ = response_forward(built.model, part.sequences, part.attention_mask, part.prompt_width,
                                            built.head)
        mask = part.response_mask.bool()
        torch.testing.assert_close(logps[mask], part.old_logps[mask], atol=1e-5, rtol=0)
        torch.testing.assert_close(values[mask], part.values[mask], atol=1e-5, rtol=0)


def test_prompts_come_back_without_their_padding():
    window = [{"prompt_input_ids": torch.tensor([[5, 6, 7], [8, 0, 0]]),
               "prompt_attention_mask": torch.tensor([[1, 1, 1], [1, 0, 0]]), "meta": [{"id": "a"}, {"id": "b"}]}]
    assert _prompts(window) == ([[5, 6, 7], [8]], [{"id": "a"}, {"id": "b"}])


@pytest.mark.parametrize(("overrides", "message"), [
    (("method=grpo", "method.group_size=1"), "at least 2 per prompt"),
    (("method=rloo", "method.rollout_size=10", "method.group_size=4"), "not a multiple of method.group_size=4"),
    (("method=ppo", "method.minibatches=3"), "does not split into method.minibatches=3"),
    (("method=ppo", "method.kl_estimator=k9"), "k1.*k2.*k3"),
    (("method=grpo", "method.loss_aggregation=batch"), "token.*sequence"),
    (("method=grpo", "+method.group_sise=4"), "unknown option.*group_sise"),
    (("method=rloo", "method.heldout_temperature=0", "method.heldout_samples=4"), "heldout_samples=4 with"),
])
def test_bad_online_options_fail_before_the_model_loads(make_cfg, tmp_path, monkeypatch, overrides, message):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad option was reported")

    monkeypatch.setattr(models, "build", no_model)
    with pytest.raises(ValueError, match=message):
        run(make_cfg("model=tiny", *overrides))


def test_prompt_rows_without_answers_and_the_verifier_reward_name_both(make_cfg, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "Write a haiku."}\n' * 4)
    with pytest.raises(ValueError, match=r"reward=verifier: .*prompts.jsonl.*no task or answer.*reward=model"):
        run(make_cfg("model=tiny", "method=grpo", "data=file", f"data.path={data}", "data.format=prompt",
                     "data.val_fraction=0.25"))


def test_a_reward_model_folder_that_is_not_a_reward_run_is_refused(make_cfg, tmp_path):
    sft = tmp_path / "sft"
    cfg = make_cfg("model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=1", "data.limit_train=8")
    cfg.paths.output_dir = str(sft)
    run(cfg)
    (sft / ".hydra").mkdir()
    OmegaConf.save(cfg, sft / ".hydra" / "config.yaml")  # what Hydra writes beside a run
    with pytest.raises(ValueError, match="is a llmft.methods.sft.SFT run, not a reward model"):
        run(make_cfg("model=tiny", "method=ppo", "reward=model", f"reward.run_dir={sft}"))


def test_ppo_scores_with_a_trained_reward_model(make_cfg, tmp_path):
    reward_run = tmp_path / "reward"
    cfg = make_cfg("model=tiny", "precision=fp32", "evaluate=false", "method=reward", "trainer.max_steps=1",
                   "data.limit_train=8")
    cfg.paths.output_dir = str(reward_run)
    run(cfg)
    (reward_run / ".hydra").mkdir()
    OmegaConf.save(cfg, reward_run / ".hydra" / "config.yaml")
    overrides = [o for o in FAST if not o.startswith("reward")]
    result = run(make_cfg(*overrides, "method=ppo", "reward=model", f"reward.run_dir={reward_run}"))
    train = [r for r in logged(tmp_path) if r.get("train/loss")]
    assert len(train) == 1 and float(train[0]["train/reward_std"]) > 0  # real, varying scores from the head
    assert result["card"]["heldout_reward"][-1]["reward"]["mean"] != 0.0


def test_response_logps_are_those_of_the_sampling_temperature():
    handle = models.build(models.ModelSpec("llmft:tiny"), models.FullSpec(), models.PrecisionSpec("32-true"))
    sequences = torch.tensor([[0, 5, 6, 7, 8, 9], [3, 4, 6, 7, 8, 0]])
    attention = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    logps, _, entropy = response_forward(handle.model.eval(), sequences, attention, 3, with_entropy=True,
                                         temperature=2.0)
    with torch.no_grad():
        logits = handle.model(input_ids=sequences, attention_mask=attention,
                              position_ids=(attention.cumsum(-1) - 1).clamp(min=0)).logits / 2.0
    expected = torch.log_softmax(logits[:, 2:-1], -1).gather(-1, sequences[:, 3:, None]).squeeze(-1)
    torch.testing.assert_close(logps, expected, atol=1e-5, rtol=0)
    probs = torch.softmax(logits[:, 2:-1], -1)
    torch.testing.assert_close(entropy, -(probs * probs.log()).sum(-1), atol=1e-4, rtol=0)


def test_an_epoch_long_online_run_counts_its_iterations(make_cfg, tmp_path):
    """trainer.max_steps=-1: one epoch of rollouts (4 prompts in windows of 2: 2 iterations), evaluated at
    the start, middle and end; the schedule spans the epoch's optimizer steps."""
    overrides = [o for o in FAST if not o.startswith(("trainer.max_steps", "data.limit_train"))]
    result = run(make_cfg(*overrides, "method=grpo", "method.group_size=2", "trainer.max_steps=-1",
                          "data.limit_train=4"))
    assert [h["iteration"] for h in result["card"]["heldout_reward"]] == [0, 1, 2]
    assert result["card"]["optimizer_steps"] == 2
