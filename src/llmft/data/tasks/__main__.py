"""``python -m llmft.data.tasks``: see :mod:`llmft.data.tasks.cli`."""

import sys

from llmft.data.tasks.cli import main

if __name__ == "__main__":
    sys.exit(main())
