"""The bundled verifiable task suite.

Five small tasks with short, deterministic answers, built so that a tiny instruct model
(SmolLM2-135M-Instruct) can learn their format from one epoch of LoRA SFT on the train split:

``tool_call``   pick one of 3-4 offered tools and fill its arguments from the request
``arithmetic``  two-digit addition / subtraction, two-digit times one-digit multiplication
``word_list``   reverse or alphabetically sort 3-5 common words
``multi_turn``  recall an item the user stated earlier in the chat
``policy``      help desk with a fact sheet: answer public facts, refuse confidential ones

Everything is generated deterministically from :data:`SEED` (one ``random.Random`` per task
and split) and written, in four views (chat, preference, unpaired, prompt; see
:mod:`~llmft.data.tasks.files`), to ``src/llmft/data/bundled/{view}_{split}.jsonl``. The
splits are disjoint by :func:`dedup_key` (see :mod:`~llmft.data.tasks.splits`).
``python -m llmft.data.tasks [--out DIR] [--check]`` regenerates the files (``--check`` only
compares them with the committed ones).

Layout: one module per task (``tool_call``, ``arithmetic``, ``word_list``, ``multi_turn``,
``policy``) holds its generator ``generate(rng, split)`` and its verifier ``verify(prediction,
answer)`` side by side; :mod:`~llmft.data.tasks.registry` gathers them and holds the single
:func:`verify` entry point (and the case-rule table); ``_common`` has the shared helpers,
``splits`` the generation and dedup, ``files`` the views and bundled files, ``cli`` the command.

Pure standard library on purpose: this package is imported by data code, metrics and scripts
that must not pay for torch or transformers.
"""

from __future__ import annotations

from llmft.data.tasks._common import SEED
from llmft.data.tasks.cli import main
from llmft.data.tasks.files import (
    BUNDLED_DIR,
    VIEWS,
    bundled_path,
    load_bundled,
    render_files,
    views,
    write_all,
)
from llmft.data.tasks.policy import REFUSAL
from llmft.data.tasks.registry import (CASE_RULES, EXTRA_VERIFIERS, MAX_NEW_TOKENS, TASK_NAMES, VERIFIABLE_TASKS,
                                       VERIFIERS, verify)
from llmft.data.tasks.splits import SPLIT_SIZES, SPLITS, dedup_key, generate, prompt_key
from llmft.data.tasks.tool_call import TOOLS
from llmft.data.templates import assistant_text

__all__ = [
    "TASK_NAMES",
    "SPLITS",
    "VIEWS",
    "SPLIT_SIZES",
    "SEED",
    "BUNDLED_DIR",
    "REFUSAL",
    "MAX_NEW_TOKENS",
    "TOOLS",
    "VERIFIERS",
    "EXTRA_VERIFIERS",
    "VERIFIABLE_TASKS",
    "CASE_RULES",
    "generate",
    "views",
    "bundled_path",
    "load_bundled",
    "verify",
    "prompt_key",
    "dedup_key",
    "assistant_text",
    "render_files",
    "write_all",
    "main",
]
