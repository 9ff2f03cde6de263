"""Constants shared by rooms that must not import each other's dependencies (pure Python)."""

IGNORE_INDEX = -100  # a label that is not supervised (transformers' convention)

# The run's objective (llmft.objective): what a sweep selects on, always measured on the validation split
OBJECTIVE_DIRECTIONS = {"val/loss": "minimize", "val/exact_match": "maximize", "val/reward": "maximize"}
