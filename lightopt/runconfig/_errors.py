"""The one error type of a config file: ``FILE:LINE: message`` on one line."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["ConfigError", "first_key", "line_of", "shorten"]

MAX_MESSAGE = 400  # characters of a message: a value quoted from a 10 MB file must not become a 10 MB line


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ConfigError(ValueError):
    """A problem in a run config, sweep file or command-line override.

    ``str(error)`` is ``"FILE:LINE: message"`` on one line (the parts that are known), at most a few
    hundred characters whatever the file holds. ``key`` is the dotted key the message is about.
    """

    def __init__(self, message: str, file: str | None = None, key: str | None = None, line: int | None = None):
        message = shorten(message)
        super().__init__(message)
        self.message, self.file, self.key, self.line = message, file, key, line

    def __str__(self) -> str:
        place = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        return f"{place}: {self.message}" if place else self.message


def first_key(message: str) -> str | None:
    """The first dotted key quoted in backticks in ``message`` (``"`trainer.max_epoch` is ..."``)."""
    match = re.search(r"`([^`\s]+)`", message)
    return match.group(1) if match else None


def line_of(key: str | None, lines: Mapping[str, int]) -> int | None:
    """The line of ``key``, else of its closest enclosing key that has one."""
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None
