"""``python -m lightopt``: the same command line as the ``lightopt`` console script."""

import sys

from lightopt.cli import main

__all__: list[str] = []  # a script: `python -m lightopt`

if __name__ == "__main__":
    sys.exit(main())
