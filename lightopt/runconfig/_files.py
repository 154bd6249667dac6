"""A run config from several files and dotted command-line overrides, merged in LightningCLI's order.

``--config A.yaml --config B.yaml --trainer.max_epochs 3``: later files override earlier ones key
by key, and overrides come last. Mappings merge recursively; a mapping whose ``class_path`` differs
from the earlier one replaces it (its ``init_args`` belong to another class); lists are replaced
whole. ``--model.hidden 3`` is taken as ``--model.init_args.hidden 3`` where ``model`` holds a
``class_path``, as jsonargparse takes it. Every key remembers the file and line it came from, so an
error in the merged config names the right file.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightopt.runconfig._errors import ConfigError
from lightopt.runconfig._keys import get_key, set_key, split_key
from lightopt.runconfig._yaml import parse_yaml, read_yaml

__all__ = ["COMMAND_LINE", "Origins", "apply_overrides", "merge_configs", "parse_overrides", "read_configs"]

COMMAND_LINE = "command line"
Origins = dict[str, tuple[str, int | None]]  # dotted key -> (file, line)


def merge_configs(base: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """``more`` over ``base`` (copies): mappings merge, a different ``class_path`` or a list replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in more.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping) and not _other_class(old, value):
            merged[key] = merge_configs(old, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _other_class(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return "class_path" in new and new["class_path"] != old.get("class_path")


def read_configs(paths: Sequence[str | Path]) -> tuple[dict[str, Any], Origins]:
    """The merged config of ``paths`` (each a YAML mapping) and where each key came from."""
    config: dict[str, Any] = {}
    origins: Origins = {}
    for path in paths:
        data, lines = read_yaml(path)
        if data is None:
            continue
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"a config must be a mapping with `model` (and `data`, `trainer`, ...), but got {type(data).__name__}",
                str(path),
                line=1,
            )
        config = merge_configs(config, data)
        origins.update({key: (str(path), line) for key, line in lines.items()})
    return config, origins


def parse_overrides(arguments: Sequence[str]) -> list[tuple[str, Any]]:
    """``["--trainer.max_epochs", "3", "--model.init_args.lr=0.1"]`` -> ``[("trainer.max_epochs", 3), ...]``.

    Values are read as YAML (``3`` an int, ``1e-4`` a float, ``null``, ``[16, 32]``). Raises
    :class:`ConfigError` for an argument that is not ``--dotted.key VALUE``.
    """
    pairs: list[tuple[str, Any]] = []
    i = 0
    while i < len(arguments):
        argument = arguments[i]
        if not argument.startswith("--") or len(argument) < 3:
            raise ConfigError(
                f"unrecognized argument {argument!r}: overrides are `--dotted.key VALUE`, e.g. "
                "`--trainer.max_epochs 3`",
                COMMAND_LINE,
            )
        key, equals, value = argument[2:].partition("=")
        if not equals:
            if i + 1 >= len(arguments):
                raise ConfigError(f"`--{key}` needs a value, e.g. `--{key} 3`", COMMAND_LINE)
            value = arguments[i + 1]
            i += 1
        i += 1
        pairs.append((key, parse_yaml(value, f"{COMMAND_LINE} (--{key})")[0]))
    return pairs


def apply_overrides(config: dict[str, Any], overrides: Sequence[tuple[str, Any]], origins: Origins) -> dict[str, Any]:
    """``config`` with each ``(dotted key, value)`` set, ``init_args`` inserted after a ``class_path`` mapping."""
    config = copy.deepcopy(config)
    for key, value in overrides:
        key = _with_init_args(config, key)
        try:
            set_key(config, key, value)
        except (IndexError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"`--{key}` points nowhere in the config", COMMAND_LINE, key) from None
        origins[key] = (COMMAND_LINE, None)
    return config


def _with_init_args(config: dict[str, Any], key: str) -> str:
    """``model.hidden`` -> ``model.init_args.hidden`` where ``model`` holds a ``class_path``."""
    parts = [str(p) for p in split_key(key)]
    out: list[str] = []
    for i, part in enumerate(parts):
        out.append(part)
        node = get_key(config, ".".join(out), None)
        following = parts[i + 1] if i + 1 < len(parts) else None
        if (
            isinstance(node, Mapping)
            and "class_path" in node
            and following is not None
            and following not in ("class_path", "init_args", "dict_kwargs")
        ):
            out.append("init_args")
    return ".".join(out)
