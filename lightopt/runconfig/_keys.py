"""Dotted keys into a run config: ``optimizer.init_args.lr``, ``trainer.callbacks.0.init_args.patience``.

A part made of digits indexes a list. Setting a key creates what a LightningCLI config would
leave out: ``init_args`` under a ``class_path``, an argument the class takes, a Trainer argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from lightopt.runconfig._classes import did_you_mean, init_parameters, resolve_class

__all__ = ["MISSING", "check_key", "class_nodes", "get_key", "set_key", "split_key"]

MISSING = object()


def split_key(key: str) -> list[str | int]:
    return [int(part) if part.isdigit() else part for part in key.split(".")]


def get_key(config: Any, key: str, default: Any = MISSING) -> Any:
    """The value at ``key``, or ``default`` where the path ends early (``KeyError`` without one)."""
    node = config
    for part in split_key(key):
        if (isinstance(node, list) and isinstance(part, int) and part < len(node)) or (
            isinstance(node, dict) and part in node
        ):
            node = node[part]
        elif default is MISSING:
            raise KeyError(key)
        else:
            return default
    return node


def set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` in ``config`` in place, creating missing dicts on the way."""
    parts = split_key(key)
    node: Any = config
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[part]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def check_key(
    config: dict[str, Any],
    key: str,
    where: str,
    classes_at: Callable[[str], Iterable[str]] = lambda prefix: (),
    free: Callable[[str], bool] = lambda prefix: False,
) -> None:
    """Raise ``ValueError`` unless ``key`` points into ``config`` or to an argument its classes take.

    Missing parts are accepted where :func:`set_key` may create them and the config's classes
    (or the Trainer) take them; the message names the first part that points nowhere.

    ``classes_at(prefix)`` gives extra class paths a dict at ``prefix`` may hold (a searched
    ``class_path``); ``free(prefix)`` is true below a value the search itself sets, which the file
    cannot describe.
    """
    node: Any = config
    created = False
    parts = split_key(key)
    for i, part in enumerate(parts):
        prefix = ".".join(map(str, parts[:i]))
        here = f"`{where}` points nowhere: "
        if free(prefix) or created:
            if created and isinstance(part, int) and not free(prefix):
                raise ValueError(
                    f"{here}`{prefix}` is not in the config, so it has no item {part}; list it in the file first."
                )
            created = True
            continue
        if isinstance(node, list):
            if not isinstance(part, int) or part >= len(node):
                raise ValueError(f"{here}`{prefix}` is a list of {len(node)}, so `{part}` must be an index below that.")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ValueError(f"{here}`{prefix}` is {node!r}, which has no keys.")
        if part in node and node[part] is not None:
            node = node[part]
            continue
        known = _known_keys(config, prefix, node, classes_at)
        if part in node or known is None or part in known:
            # a missing `init_args` is still checked against its class; below anything else, all goes
            node, created = {}, part != "init_args" and (prefix, part) != ("", "trainer")
            continue
        if not prefix:
            raise ValueError(f"{here}the file has no `{part}`.{did_you_mean(part, known)}")
        raise ValueError(f"{here}`{prefix}` has no key `{part}`.{did_you_mean(part, known)}")


def _known_keys(config: dict[str, Any], prefix: str, node: dict[str, Any], classes_at: Callable) -> set[str] | None:
    """Keys ``node`` may gain; None when any key goes (a class with ``**kwargs``)."""
    known = set(node)
    if not prefix:
        known |= {"trainer", "seed_everything"}
    if "class_path" in node:
        known.add("init_args")
    if prefix == "trainer":
        import lightning  # the Trainer's arguments; lightning is imported by the time keys are checked

        known |= set(init_parameters(lightning.Trainer) or ())
    if prefix == "init_args" or prefix.endswith(".init_args"):
        owner = prefix[: -len(".init_args")] if "." in prefix else ""
        paths = {*classes_at(owner)}
        class_path = get_key(config, f"{owner}.class_path" if owner else "class_path", None)
        if isinstance(class_path, str):
            paths.add(class_path)
        for path in paths:
            try:
                parameters = init_parameters(resolve_class(path, f"{owner}.class_path"))
            except (TypeError, ValueError):
                continue
            if parameters is None:
                return None
            known |= set(parameters)
    return known


def class_nodes(node: Any, prefix: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(dotted key, mapping)`` for every mapping with a string ``class_path``, outermost first."""
    if isinstance(node, Mapping):
        if isinstance(node.get("class_path"), str):
            yield prefix, node
        for key, value in node.items():
            yield from class_nodes(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from class_nodes(value, f"{prefix}.{i}" if prefix else str(i))
