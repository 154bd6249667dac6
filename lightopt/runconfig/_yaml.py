"""Reading YAML the way users write it, safely: YAML 1.2 numbers, bounded size and aliases, line numbers.

PyYAML implements YAML 1.1, where ``1e-4`` and ``1.0e3`` are strings (a float needs a dot and a
signed exponent there); YAML 1.2, jsonargparse and most people read them as numbers, so the loader
here adds YAML 1.2's float pattern. A file is refused, in one line, when it is larger than
:data:`MAX_FILE_BYTES`, when its aliases would expand to more than :data:`MAX_ALIAS_NODES` nodes (a
"billion laughs" bomb would otherwise take minutes and all memory), when an anchor refers to itself,
or when it nests deeper than Python can follow.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from lightopt.runconfig._errors import ConfigError

__all__ = ["MAX_ALIAS_NODES", "MAX_FILE_BYTES", "dump_yaml", "parse_yaml", "read_yaml"]

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_ALIAS_NODES = 100_000

# YAML 1.2's core-schema float, less what YAML 1.1's resolver already reads (it runs first).
_FLOAT_12 = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)$")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats, refusing recursive anchors and alias bombs while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open_anchors: set[str] = set()
        self._sizes: dict[int, int] = {}
        self._expanded = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise _Refused(f"the anchor &{event.anchor} refers to itself; a config cannot be recursive", event)
            if event.anchor in self.anchors:
                self._expanded += self._size(self.anchors[event.anchor])
                if self._expanded > MAX_ALIAS_NODES:
                    raise _Refused(
                        f"its aliases expand to more than {MAX_ALIAS_NODES} values; write the values out "
                        "or use fewer nested aliases",
                        event,
                    )
            return super().compose_node(parent, index)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open_anchors.discard(anchor)

    def _size(self, node: Any) -> int:
        """Nodes in ``node``'s tree with every alias expanded (memoized: shared subtrees count each time)."""
        if id(node) not in self._sizes:
            if isinstance(node, yaml.MappingNode):
                size = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
            elif isinstance(node, yaml.SequenceNode):
                size = 1 + sum(self._size(item) for item in node.value)
            else:
                size = 1
            self._sizes[id(node)] = size
        return self._sizes[id(node)]


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, event: Any) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, event.start_mark


def parse_yaml(text: str, where: str | None = None) -> tuple[Any, dict[str, int]]:
    """``(data, lines)`` from YAML ``text``: ``lines`` maps dotted keys to 1-based line numbers.

    Raises :class:`ConfigError` naming ``where`` and the line for malformed or refused YAML.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        message = problem if isinstance(error, _Refused) else f"malformed YAML: {problem}"
        raise ConfigError(message, where, line=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise ConfigError("the YAML nests deeper than lightopt reads; flatten it", where) from None
    finally:
        loader.dispose()
    return data, _key_lines(node)


def read_yaml(path: str | Path) -> tuple[Any, dict[str, int]]:
    """:func:`parse_yaml` of the file at ``path``, refusing files over :data:`MAX_FILE_BYTES`."""
    where = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                f"the file is {size / 1e6:.1f} MB; lightopt reads config and sweep files up to "
                f"{MAX_FILE_BYTES / 1e6:.1f} MB",
                where,
            )
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", where) from None
    except IsADirectoryError:
        raise ConfigError("is a folder, not a YAML file", where) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the file: {error}", where) from None
    return parse_yaml(text, where)


def dump_yaml(data: Any) -> str:
    """``data`` as YAML (key order kept) that PyYAML, YAML 1.2 readers and jsonargparse read back the same."""
    return yaml.safe_dump(data, sort_keys=False)


def _key_lines(node: Any) -> dict[str, int]:
    """Dotted key -> 1-based line, from the YAML node tree (aliases are not followed twice)."""
    lines: dict[str, int] = {}
    seen: set[int] = set()
    stack = [("", node)]
    while stack:
        prefix, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            items = [(f"{prefix}.{k.value}" if prefix else str(k.value), k, v) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            items = [(f"{prefix}.{i}" if prefix else str(i), item, item) for i, item in enumerate(node.value)]
        else:
            continue
        for key, key_node, value_node in items:
            lines.setdefault(key, key_node.start_mark.line + 1)
            stack.append((key, value_node))
    return lines
