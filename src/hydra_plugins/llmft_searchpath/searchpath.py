"""Makes `python train.py -m +sweep=<name>` find `sweeps/sweep/<name>.yaml`, from any working directory.

Hydra builds the config search path from the `@hydra.main(config_path=...)` of `train.py` (or the
`initialize_config_dir(...)` of a test): an absolute `file://.../conf` entry of provider `main`. It then
calls every SearchPathPlugin found in the `hydra_plugins` namespace package (installed with llmft),
before any config is read. This one appends `file://<checkout>/sweeps`, `<checkout>` being the parent
of that `conf/` folder, so the group `sweep` is `<checkout>/sweeps/sweep/`. It is an absolute path:
a `hydra.searchpath: [file://sweeps]` in train.yaml would be relative to the working directory and
break `cd /tmp && python /work/main/train.py -m +sweep=lr_rank`.

It acts only for llmft's own config folder (a `conf/` that has `train.yaml` beside a
`sweeps/sweep/` folder); any other Hydra application in the same environment is left as it was.
"""
from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROVIDER = "llmft-sweeps"
SWEEP_GROUP = "sweep"


def sweeps_folder(main_path: str) -> Path | None:
    """`<checkout>/sweeps` for llmft's `<checkout>/conf` (as `file://...` or a bare absolute path), else None."""
    if main_path.startswith("file://"):
        main_path = main_path[len("file://"):]
    elif "://" in main_path:  # pkg:// or structured://: not a folder of a checkout
        return None
    conf = Path(main_path)
    sweeps = conf.parent / "sweeps"
    if conf.is_absolute() and (conf / "train.yaml").is_file() and (sweeps / SWEEP_GROUP).is_dir():
        return sweeps
    return None


class LlmftSweepsSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        mains = [element.path for element in search_path.get_path() if element.provider == "main"]
        for main in mains:
            sweeps = sweeps_folder(main)
            if sweeps is not None:
                # right after `main`: conf/ wins over sweeps/ for a name both have
                search_path.append(provider=PROVIDER, path=f"file://{sweeps}", anchor=SearchPathQuery(provider="main"))
