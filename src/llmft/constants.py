"""Constants shared by rooms that must not import each other's dependencies (pure Python)."""

IGNORE_INDEX = -100  # a label that is not supervised (transformers' convention)
