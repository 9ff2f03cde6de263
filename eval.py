"""Evaluate a finished run or a bare model: `python eval.py run_dir=runs/...` (see README)."""
import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from llmft.evaluate import run

    run(cfg)


if __name__ == "__main__":
    main()
