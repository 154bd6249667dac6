"""``python -m lightopt``: the same command line as the ``lightopt`` console script."""

import sys

from lightopt.cli import main

if __name__ == "__main__":
    sys.exit(main())
