"""jsonargparse's multi-line errors as one line that names the key: what a user sees instead of the parser's text."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lightopt.runconfig._keys import class_nodes, get_key

__all__ = ["parser_error_message"]

_KEY = re.compile(r'(?:Parser key|Key|key) "([^"]+)"')
_OPTION = re.compile(r"Option '([^']+)' is not accepted")
_CLASS = re.compile(r"Problem with given class_path '([^']+)'")
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Expected a <class 'NoneType'>",
    "does not correspond to a subclass of",
    "Subclass types expect one of",
    "a class path (str)",
    "a dict with",
    "a dict without",
    "Not a valid subclass of",
)


def parser_error_message(text: str, config: Mapping[str, Any] | None = None) -> tuple[str, str | None]:
    r"""``(message, key)`` from a jsonargparse error: the full dotted key it is about and its reasons, on one line.

    Example:
        >>> message, key = parser_error_message('Parser key "trainer.max_epochs":\n  Expected an int. Got value: x')
        >>> print(message)
        `trainer.max_epochs`: Expected an int. Got value: x
    """
    keys = _KEY.findall(text)
    key = keys[0] if keys else None
    inner = keys[-1] if len(keys) > 1 else None
    option = _OPTION.search(text)
    if option:
        inner = option.group(1)
    if key and inner and not inner.startswith(key):
        key = f"{key}.init_args.{inner}" if _CLASS.search(text) else f"{key}.{inner}"
    elif key is None and inner:
        key = inner
    classes = _CLASS.findall(text)
    if config is not None and keys and classes and inner and "." not in inner:
        for where, node in class_nodes(get_key(config, keys[0], None), keys[0]):
            if node["class_path"] == classes[-1] and inner in (node.get("init_args") or {}):
                key = f"{where}.init_args.{inner}"
    reasons: list[str] = []
    for raw in text.splitlines():
        line = raw.strip().lstrip("- ").strip()
        if not line or any(noise in line for noise in _NOISE) or _KEY.fullmatch(line.rstrip(":")) or _CLASS.match(line):
            continue
        line = _KEY.sub(lambda m: f"`{m.group(1)}`", line).rstrip(":")
        if line not in reasons:
            reasons.append(line)
    specific = [r for r in reasons if not r.startswith("Expected a <class")]
    reasons = specific or reasons
    message = "; ".join(reasons) or "not accepted by LightningCLI's parser"
    if classes:
        message += f" (class_path {classes[-1]!r})"
    return (f"`{key}`: {message}" if key else message), key
