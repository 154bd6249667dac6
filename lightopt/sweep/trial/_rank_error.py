"""How a DDP rank tells rank 0 why it failed, apart from the rank's entry point (which imports torch when it runs)."""

from __future__ import annotations

__all__ = ["ERROR_MARK", "RANK_MODULE"]

#: The last line of a failed rank's output: this prefix, then its error as a JSON string.
ERROR_MARK = "lightopt-rank-error: "
#: The module a DDP trial's other ranks run: ``python -m lightopt.sweep.trial._rank``.
RANK_MODULE = "lightopt.sweep.trial._rank"
