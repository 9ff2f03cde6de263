"""`logger=wandb` with the real wandb package and no network: the offline fallback, what the offline
files hold (read back from W&B's own transaction log), secrets, and the run id a resumed run reuses.

The offline `.wandb` file is W&B's transaction log: a 7-byte header (":W&B", magic 0xBEE1, version 0)
then leveldb-log records (7-byte header: CRC32, length, type FULL/FIRST/MIDDLE/LAST; 32 KiB blocks),
each a `wandb_internal_pb2.Record` protobuf. wandb 0.31 ships the protobuf but no Python reader,
so `records()` below reads the framing and wandb's protobuf parses each record.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2

from tests.conftest import ROOT

WANDB_KEY = "SENTINELwandbKEY" + "0123456789abcdef01234567"  # 40 characters, as a real key
SECRETS = {"WANDB_API_KEY": WANDB_KEY, "HF_TOKEN": "hf_SENTINELhfTOKEN123456",
           "MY_SERVICE_TOKEN": "SENTINELmyServiceToken99"}
RUN = ["model=tiny", "logger=wandb", "trainer.max_steps=2", "evaluation.limit=2", "evaluation.max_new_tokens=4",
       "data.limit_train=16", "data.batch_size=4", "precision=fp32",
       # secrets reaching the config through interpolations: Hydra's .hydra/ keeps the `${...}` text,
       # everything resolved (W&B config, hparams.yaml) must show "<redacted>"
       "+service.url=https://user:${oc.env:MY_SERVICE_TOKEN}@example.com", "+service.api_key=${oc.env:HF_TOKEN}"]
# wandb.init online without a network blocks 90 s before it raises: a run that waited for it takes
# 90 s more than this tiny run (about 30 s alone on 2 cores, up to about 60 s on a busy machine)
HANG_GUARD_S = 90
DECISION_S = 10  # the offline decision itself (measured: a few milliseconds when the name does not resolve)
BLOCK, HEADER = 32768, 7


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:HEADER]) == (b":W&B", 0xBEE1, 0), f"{path} is not a W&B transaction log"
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if pos + HEADER + length > len(data):  # a record W&B's writer is still writing
            return
        chunk, pos = data[pos + HEADER:pos + HEADER + length], pos + HEADER + length
        if kind == 0:  # zero padding up to the end of the block
            pos += -pos % BLOCK
            continue
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            yield record


def offline_log(run_dir: Path, wait_s: float = 30) -> list[wandb_internal_pb2.Record]:
    """The records of every offline part of the run, in order of start. `run.finish()` can return
    before W&B's writer process has flushed the file: wait for each part's closing `exit` record."""
    parts = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert parts, f"no offline W&B run under {run_dir / 'wandb'}"
    deadline = time.monotonic() + wait_s
    return [record for part in parts for record in finished_part(part, deadline)]


def finished_part(part: Path, deadline: float) -> list[wandb_internal_pb2.Record]:
    """The records of one offline part, once its closing `exit` record is written (or fail at `deadline`)."""
    while not (part_log := list(records(part))) or part_log[-1].WhichOneof("record_type") != "exit":
        assert time.monotonic() < deadline, f"{part} has no exit record by the deadline"
        time.sleep(0.2)
    return part_log


def history(log: list) -> list[dict]:
    return [{"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            for r in log if r.WhichOneof("record_type") == "history"]


def config(log: list) -> dict:
    return {u.key: json.loads(u.value_json) for r in log if r.WhichOneof("record_type") in ("run", "config")
            for u in (r.run.config.update if r.HasField("run") else r.config.update)}


def summary(log: list) -> dict:
    return {"/".join(u.nested_key) or u.key: json.loads(u.value_json)
            for r in log if r.WhichOneof("record_type") == "summary" for u in r.summary.update}


def files_holding_secrets(paths) -> list[str]:
    """Files (symlinks followed) whose bytes contain a secret value."""
    found = []
    for path in paths:
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path} holds {name}" for name, value in SECRETS.items() if value.encode() in data]
    return found


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory) -> tuple[Path, float, str]:
    """`python train.py logger=wandb ...` with secrets in the environment, a realistic W&B key and no
    WANDB_MODE (CI exports WANDB_MODE=offline). The server is one no network reaches (the reserved
    `.invalid` domain never resolves), so the test means the same with or without a network."""
    run_dir = tmp_path_factory.mktemp("wandb") / "run"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env.update(SECRETS, WANDB_BASE_URL="https://api.wandb.invalid", OMP_NUM_THREADS="1")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py", *RUN, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, seconds, proc.stdout + proc.stderr


def test_a_key_without_network_runs_offline_without_waiting(secret_run):
    run_dir, seconds, output = secret_run
    assert seconds < HANG_GUARD_S, f"the run took {seconds:.0f} s: did wandb.init wait for the network?"
    decided = re.search(r"W&B ran offline \(credentials from WANDB_API_KEY, but .* is unreachable "
                        r".*decided in ([0-9.]+) s", output)
    assert decided, output[-3000:]
    assert float(decided.group(1)) < DECISION_S
    run_id = (run_dir / "wandb" / "llmft_run_id").read_text().strip()
    assert f"wandb sync {run_dir / 'wandb'}/offline-run-*-{run_id}" in output
    assert [p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")] == [run_id]


def test_offline_files_hold_metrics_config_evaluation_and_run_card(secret_run):
    run_dir = secret_run[0]
    log = offline_log(run_dir)
    rows = history(log)
    assert len([r for r in rows if "train/loss" in r]) == 2, rows  # one per optimizer step
    eval_json = json.loads((run_dir / "eval.json").read_text())
    logged_eval = next(r for r in rows if "eval/tuned/exact_match/overall" in r)
    assert logged_eval["eval/tuned/exact_match/overall"] == eval_json["tuned"]["exact_match"]["overall"]
    cfg = config(log)
    assert cfg["trainer"]["max_steps"] == 2 and cfg["model"]["name_or_path"] == "llmft:tiny"
    assert cfg["service"] == {"url": "https://user:<redacted>@example.com", "api_key": "<redacted>"}
    run = next(r.run for r in log if r.WhichOneof("record_type") == "run")
    assert list(run.tags) == ["sft", "lora", "tiny"] and run.run_group == "" and run.display_name == "run"
    card = json.loads((run_dir / "run_card.json").read_text())
    assert summary(log)["run_card"]["optimizer_steps"] == card["optimizer_steps"] == 2
    [files] = (run_dir / "wandb").glob("offline-run-*/files")
    assert json.loads((files / "eval.json").read_text()) == eval_json
    assert json.loads((files / "run_card.json").read_text())["seed"] == card["seed"]
    saved = {f.path for r in log if r.WhichOneof("record_type") == "files" for f in r.files.files}
    assert {"run_card.json", "eval.json"} <= saved


def test_no_secret_in_what_the_loggers_write(secret_run):
    """W&B's folder (debug logs and the core log it links to included), hparams.yaml, the run card,
    the evaluation, metrics.csv and train.log."""
    run_dir = secret_run[0]
    paths = [*(run_dir / "wandb").rglob("*"), *(run_dir / n for n in ("hparams.yaml", "run_card.json", "eval.json",
                                                                     "metrics.csv", "train.log"))]
    assert (run_dir / "hparams.yaml").is_file()
    assert files_holding_secrets(paths) == []


def test_no_secret_in_any_file_of_the_run(secret_run):
    assert files_holding_secrets(secret_run[0].rglob("*")) == []


def test_a_logger_built_again_for_the_folder_continues_the_same_wandb_run(tmp_path, monkeypatch):
    from llmft.loggers import record_run, wandb_logger

    monkeypatch.setenv("WANDB_MODE", "offline")
    first = wandb_logger(save_dir=str(tmp_path), tags=["sft"])
    run_id = first.version
    assert (tmp_path / "wandb" / "llmft_run_id").read_text().strip() == run_id
    first.log_metrics({"train/loss": 2.0}, step=1)
    record_run([first], {"seed": 1}, {})  # finishes the W&B run, as at the end of train.py
    time.sleep(1.1)  # W&B names a run's folder by its start second: a real restart is never this quick
    second = wandb_logger(save_dir=str(tmp_path), tags=["sft"])  # the resumed (or requeued) run
    assert second.version == run_id
    second.log_metrics({"train/loss": 1.0}, step=2)
    record_run([second], {"seed": 1}, {})
    parts = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert [p.name.rsplit("-", 1)[-1] for p in parts] == [run_id, run_id]
    for part in parts:
        part_log = finished_part(next(part.glob("*.wandb")), time.monotonic() + 30)
        [run] = [r.run for r in part_log if r.WhichOneof("record_type") == "run"]
        assert run.run_id == run_id
    assert [r["train/loss"] for r in history(offline_log(tmp_path)) if "train/loss" in r] == [2.0, 1.0]


def test_the_probe_decides_in_seconds(monkeypatch):
    from llmft.loggers.wandb_mode import decide_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", "/nonexistent")  # no settings file
    monkeypatch.setenv("NETRC", "/nonexistent")
    assert decide_mode(None, 5).reason.startswith("no W&B credentials")
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert decide_mode(None, 5).mode == "online"
    decision = decide_mode(None, 5)  # the port is closed now
    assert decision.mode == "offline" and "unreachable" in decision.reason and decision.seconds < 5
    assert decide_mode("offline", 5).reason == "logger.wandb.mode=offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert decide_mode(None, 5).mode == "disabled"


def test_an_online_start_that_fails_falls_back_offline(tmp_path, monkeypatch):
    """A server that accepts connections and never answers: the probe passes, wandb.init fails after
    its init_timeout, the run goes on offline under the same id."""
    from llmft.loggers import record_run, wandb_logger

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []  # connections held open, never answered

    def accept() -> None:
        with contextlib.suppress(OSError):  # the test closed the server
            while True:
                accepted.append(server.accept())

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    logger = wandb_logger(save_dir=str(tmp_path), init_timeout=5)
    assert logger.decision.mode == "online"
    started = time.perf_counter()
    logger.log_metrics({"train/loss": 3.0}, step=1)
    seconds = time.perf_counter() - started
    assert logger.offline and logger.decision.reason.startswith("wandb.init failed online"), logger.decision
    assert seconds < 45, f"the fallback took {seconds:.0f} s"
    record_run([logger], {"seed": 1}, {})
    server.close()
    assert [r["train/loss"] for r in history(offline_log(tmp_path)) if "train/loss" in r] == [3.0]
    assert files_holding_secrets((tmp_path / "wandb").rglob("*")) == []


def test_a_multirun_groups_by_its_sweep_folder(make_cfg):
    from llmft.loggers.wandb_run import sweep_group

    cfg = make_cfg("logger=wandb")
    assert sweep_group() is None
    assert list(cfg.logger.wandb.tags) == ["sft", "lora", "smollm2_135m"]
    make_cfg("logger=wandb", "hydra.mode=MULTIRUN", "hydra.sweep.dir=runs/multirun/2026-01-01/10-00-00")
    assert sweep_group() == "2026-01-01_10-00-00"
