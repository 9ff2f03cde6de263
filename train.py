"""Fine-tune a model: `python train.py [group=option ...] [key=value ...]` (see README).
Returns the run's objective (a validation metric) for sweepers such as Optuna."""
import hydra
from omegaconf import DictConfig

from llmft.resolvers import register

register()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from llmft.train import run

    return run(cfg)["objective"]


if __name__ == "__main__":
    main()
