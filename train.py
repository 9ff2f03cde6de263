"""Fine-tune a model: `python train.py [group=option ...] [key=value ...]` (see README)."""
import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from llmft.train import run

    run(cfg)


if __name__ == "__main__":
    main()
