"""Exact resume (`resume=<run dir>`): a run killed with SIGKILL (no signal handler, no warning) inside
an accumulation window, then resumed, logs the same per-step losses as an uninterrupted run, bit for
bit (fp32, one thread in both): from a checkpoint at the end of an epoch and from one in the middle of
a later epoch."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from llmft import resume
from llmft.checkpoints import saved_checkpoints

ROOT = Path(__file__).resolve().parents[2]
# 24 rows, windows of 2 micro-batches of 2: 6 optimizer steps an epoch, 14 steps = 2.33 epochs;
# checkpoints at steps 3, 6 (the end of epoch 0), 9 (the middle of epoch 1), 12, 14 (the end of training)
SFT = ["model=tiny", "precision=fp32", "evaluate=false", "trainer.max_steps=14", "trainer.accumulate_grad_batches=2",
       "data.batch_size=2", "data.limit_train=24", "callbacks.resume_checkpoints.every_n_steps=3"]
# PPO: sampling draws from the global RNG, the adaptive KL coefficient and the held-out history are method state.
# 8 iterations of 2 optimizer steps: a checkpoint whenever the step count passes a multiple of 5 (steps 6, 10, ...)
PPO = ["model=tiny", "precision=fp32", "evaluate=false", "method=ppo", "trainer.max_steps=8", "data.limit_train=12",
       "method.rollout_size=4", "method.micro_batch_size=2", "method.sampling.max_new_tokens=6", "optim.lr=1e-2",
       "method.kl_target=0.01", "method.epochs=1", "method.minibatches=2",
       "reward=function", "reward.fn=test_online_methods.shorter_is_better",
       "callbacks.resume_checkpoints.every_n_steps=5"]


def train(*overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests" / "integration")}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"train.py {' '.join(overrides)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def per_step(run_dir: Path, column: str) -> list[tuple[int, str]]:
    return [(int(r["step"]), r[column]) for r in rows(run_dir) if r.get(column)]


def kill_inside_window(step: int, micro: int, marker: Path, name: str = "kill") -> list[str]:
    return [f"+callbacks.{name}._target_=helpers.interrupt.KillInsideWindow", f"+callbacks.{name}.step={step}",
            f"+callbacks.{name}.micro={micro}", f"+callbacks.{name}.marker={marker}"]


@pytest.fixture(scope="module")
def sft_full(tmp_path_factory) -> Path:
    """The uninterrupted SFT run the interrupted ones are compared with."""
    full = tmp_path_factory.mktemp("resume") / "full"
    train(*SFT, f"hydra.run.dir={full}")
    return full


def test_sigkill_inside_an_accumulation_window_then_resume_is_bit_identical(tmp_path, sft_full):
    full, cut = sft_full, tmp_path / "cut"
    kills = [*kill_inside_window(7, 1, tmp_path / "killed_7", "kill_7"), *kill_inside_window(10, 0, tmp_path / "killed_10", "kill_10")]
    killed = train(*SFT, f"hydra.run.dir={cut}", *kills, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # step 7's window (the second of epoch 1) was cut after its second micro-batch's backward;
    # the newest checkpoint is step 6, taken after the last window of epoch 0
    assert [p.name for p in saved_checkpoints(cut / resume.RESUME_DIR)] == ["step-00000003.ckpt", "step-00000006.ckpt"]
    assert not (cut / "run_card.json").exists()
    config_before = (cut / ".hydra" / "config.yaml").read_text()

    killed = train(f"resume={cut}", check=False)  # killed again, inside step 10's window: mid-epoch 1
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [p.name for p in saved_checkpoints(cut / resume.RESUME_DIR)] == ["step-00000006.ckpt", "step-00000009.ckpt"]
    train(f"resume={cut}")

    expected = per_step(full, "train/loss")
    assert len(expected) == 14
    assert per_step(cut, "train/loss") == expected  # the strings of the floats: bit for bit
    assert per_step(cut, "train/grad_norm") == per_step(full, "train/grad_norm")
    assert per_step(cut, "val/loss") == per_step(full, "val/loss")
    steps = [s for s, _ in per_step(cut, "train/loss")]
    assert steps == sorted(set(steps)), "a step logged twice"
    assert (cut / ".hydra" / "config.yaml").read_text() == config_before  # the run's config is kept
    assert len(list((cut / ".hydra" / "resumed").iterdir())) == 2  # each resume command's own Hydra record
    name = "adapter_model.safetensors"
    assert (full / "checkpoints" / "adapter" / name).read_bytes() == (cut / "checkpoints" / "adapter" / name).read_bytes()


def test_online_method_resumes_with_its_rng_and_state(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(*PPO, f"hydra.run.dir={full}")
    # killed in iteration 4 (its second backward, step 9), after the middle held-out evaluation (end of iteration 3)
    killed = train(*PPO, f"hydra.run.dir={cut}", *kill_inside_window(9, 1, tmp_path / "killed"), check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [p.name for p in saved_checkpoints(cut / resume.RESUME_DIR)] == ["step-00000006.ckpt"]

    train(f"resume={cut}")

    for column in ("train/loss", "train/reward", "train/completions/mean_length", "train/kl_coef"):
        assert per_step(cut, column) == per_step(full, column), column
    assert len(per_step(full, "train/kl_coef")) == 8
    full_card, cut_card = (json.loads((d / "run_card.json").read_text()) for d in (full, cut))
    assert cut_card["heldout_reward"] == full_card["heldout_reward"]  # start (before the kill), middle, end
    assert [h["iteration"] for h in cut_card["heldout_reward"]] == [0, 4, 8]
    assert (cut / "samples.csv").read_text() == (full / "samples.csv").read_text()


def test_a_crash_during_a_save_leaves_the_previous_checkpoint(tmp_path, sft_full):
    """The process dies while step 6's checkpoint is being serialised: no checkpoint of step 6 exists,
    and the resume continues from step 3. A half-written file of step 6 (what a crash during the disk
    write leaves: the first half of the bytes, under the temporary name) is never taken for a checkpoint."""
    cut = tmp_path / "cut"
    killed = train(*SFT, f"hydra.run.dir={cut}", "+callbacks.kill._target_=helpers.interrupt.KillDuringSave",
                   "+callbacks.kill.step=6", f"+callbacks.kill.marker={tmp_path / 'killed'}", check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    folder = cut / resume.RESUME_DIR
    assert [p.name for p in saved_checkpoints(folder)] == ["step-00000003.ckpt"]
    whole = (folder / "step-00000003.ckpt").read_bytes()
    (folder / ".step-00000006.ckpt.999.tmp").write_bytes(whole[: len(whole) // 2])
    train(f"resume={cut}")
    assert per_step(cut, "train/loss") == per_step(sft_full, "train/loss")


def test_resume_refuses_what_would_not_be_a_continuation(tmp_path, make_cfg):
    run_dir = tmp_path / "run"
    (run_dir / resume.RESUME_DIR).mkdir(parents=True)
    cfg = make_cfg("model=tiny", f"resume={run_dir}")
    with pytest.raises(FileNotFoundError, match="no checkpoints/resume/config.yaml"):
        resume.resolve(cfg, tmp_path, [f"resume={run_dir}"])
    OmegaConf.save(make_cfg("model=tiny"), resume.run_config_path(run_dir))
    with pytest.raises(FileNotFoundError, match="stopped before its first one"):
        resume.resolve(cfg, tmp_path, [f"resume={run_dir}"])
    with pytest.raises(ValueError, match=r"drop the other overrides: trainer.max_steps=99"):
        resume.resolve(cfg, tmp_path, [f"resume={run_dir}", "trainer.max_steps=99"])
    torch.save({}, run_dir / resume.RESUME_DIR / "step-00000002.ckpt")
    fresh = make_cfg("model=tiny")
    with pytest.raises(FileExistsError, match=f"continue it with resume={run_dir}"):
        resume.resolve(fresh, run_dir, [])
    (run_dir / "run_card.json").write_text("{}")
    with pytest.raises(ValueError, match="the run finished"):
        resume.resolve(cfg, tmp_path, [f"resume={run_dir}"])


def test_half_written_checkpoints_are_never_listed(tmp_path):
    for name in ("step-00000004.ckpt", ".step-00000008.ckpt.123.tmp", "step-00000002.ckpt", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in saved_checkpoints(tmp_path)] == ["step-00000002.ckpt", "step-00000004.ckpt"]
