"""Reading a finished run folder (what `train.py` left behind), for `eval.py run_dir=` and `init_from=`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


@dataclass
class FinishedRun:
    folder: Path
    config: DictConfig  # the run's resolved training config (.hydra/config.yaml)
    saved: Path  # checkpoints/adapter or checkpoints/model
    launched_from: Path | None = None  # the folder it was launched from (Hydra's runtime.cwd)

    def resolve(self, path: str | Path) -> Path:
        """A path of this run's config (its `init_from`): relative paths were relative to where the
        run was launched, which need not be where it is read from now."""
        path = Path(path).expanduser()
        if path.is_absolute() or self.launched_from is None or path.exists():
            return path
        return self.launched_from / path

    def chat_template(self) -> str | None:
        """The run's `data.chat_template`, a relative .jinja path resolved like `resolve` does."""
        from llmft.data.templates import bundled_templates

        name = self.config.data.get("chat_template")
        if name is None or name == "tokenizer" or name in bundled_templates():
            return name
        return str(self.resolve(name))


def finished_run(folder: str | Path, key: str = "run_dir") -> FinishedRun:
    """The run in `folder`, or an error naming what is missing (`key` is the option that named it)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{key}={folder}: no such folder")
    config = folder / ".hydra" / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{key}={folder}: no .hydra/config.yaml (is it a llmft run folder?)")
    saved = next((folder / "checkpoints" / d for d in ("adapter", "model") if (folder / "checkpoints" / d).is_dir()), None)
    if saved is None:
        raise FileNotFoundError(f"{key}={folder}: no checkpoints/adapter or checkpoints/model (did training finish?)")
    if not (folder / "run_card.json").is_file():
        raise FileNotFoundError(f"{key}={folder}: no run_card.json (the run did not finish)")
    hydra = folder / ".hydra" / "hydra.yaml"
    cwd = OmegaConf.load(hydra).hydra.runtime.get("cwd") if hydra.is_file() else None
    return FinishedRun(folder, OmegaConf.load(config), saved, Path(cwd) if cwd else None)


def lineage(run: FinishedRun) -> list[Path]:
    """The saved folders a run was built on (its `init_from` parents, oldest first), then its own."""
    chain = [run.saved]
    seen = {run.folder.resolve()}
    while run.config.get("init_from"):
        run = finished_run(run.resolve(run.config.init_from), key="init_from")
        if run.folder.resolve() in seen:
            raise ValueError(f"init_from: {run.folder} is its own ancestor")
        seen.add(run.folder.resolve())
        chain.insert(0, run.saved)
    return chain
