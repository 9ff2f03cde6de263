"""Hydra search-path plugin of llmft: puts the checkout's `sweeps/` folder on the config search path
(see `searchpath.py`). `hydra_plugins` is a namespace package shared with the other Hydra plugins:
it must never get an `__init__.py`."""
