"""The ``lightopt`` command line."""

from __future__ import annotations

import argparse
import sys

import lightopt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightopt", description=lightopt.__doc__)
    parser.add_argument("--version", action="version", version=f"lightopt {lightopt.__version__}")
    parser.parse_args(argv)
    parser.print_help(sys.stdout)
    return 0
