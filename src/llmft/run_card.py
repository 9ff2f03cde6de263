"""The run card: what a run needs to be reproduced and compared (written as run_card.json)."""
from __future__ import annotations

import importlib.metadata
import platform
import resource
import shlex
import subprocess
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout llmft runs from (src/llmft/run_card.py)

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "lightning", "hydra-core", "datasets", "wandb")


def git_state(cwd: Path) -> dict:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, on CUDA, peak allocated GPU memory."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = {"cpu_max_rss_mib": round(rss_kib / 1024 if sys.platform != "darwin" else rss_kib / 2**20, 1)}
    if torch.cuda.is_available():
        peak["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def command_line(script: str) -> str:
    """The command that reproduces this job: `python <script>` plus the job's own overrides. Under
    a multirun (`-m`) that is one point of the sweep, not the whole sweep line."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
    else:
        overrides = sys.argv[1:]
    return shlex.join(["python", script, *overrides])


def portable_path(path: str | Path) -> str:
    """A path as it means something on another machine: relative to the llmft checkout when inside
    it, `~/...` when inside the home folder, else as it is."""
    path = Path(path).expanduser().resolve()
    for root, prefix in ((REPO_ROOT, ""), (Path.home().resolve(), "~/")):
        if path.is_relative_to(root):
            return prefix + str(path.relative_to(root))
    return str(path)


def torch_settings() -> dict:
    """What makes CPU numbers reproducible and comparable: threads and determinism."""
    return {
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
