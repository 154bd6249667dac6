"""Warm starts: ``study.enqueue`` (known-good settings tried first) and ``study.warm_start`` (another study's trials).

``study.warm_start: {study: OLD, storage: URL}`` is only checked here (:class:`WarmStart`); the
study layer copies the trials (:mod:`lightopt.sweep.study`'s warm start). ``study.enqueue`` is
turned into trial params here, where the search space is known:

Each entry is a mapping from the ``search`` block's dotted keys to config values (the book's
defaults, a colleague's settings), or the path of a YAML run config, such as the ``best.yaml``
that ``lightopt sweep best --export`` writes, whose values at the searched keys are read::

    study:
      enqueue:
        - {optimizer.init_args.lr: 0.01, optimizer.init_args.momentum: 0.9}
        - runs/old/best.yaml          # relative to the sweep file, as `config:` paths are

A value is what the config gets, not what the sampler draws: for a key searched in another
coordinate (``coordinate: horizon``, ``effective``, ``scale_with_batch``) it is converted back with
:meth:`~lightopt.sweep.spec.Coordinate.from_config`, the inverse of the conversion a trial applies,
reading the momentum and batch size from the entry (or from the file where the entry leaves them
out and they are not searched). A searched key an entry leaves out is sampled as usual. For a
``choices`` mapping, the entry gives the label or the value of a choice (from a run config: the
choice with the same value, or the only one with the same ``class_path``).

Everything is checked when the file is read: a key not in ``search``, a value outside its range
or choices, a missing file fail with one line naming the entry.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightopt import _validation
from lightopt.runconfig import ConfigError, get_key, read_yaml, set_key
from lightopt.sweep.spec._space import Param, SearchSpace

__all__ = ["WARM_START_KEYS", "Enqueued", "WarmStart", "check_enqueue", "parse_enqueue", "parse_warm_start"]

WARM_START_KEYS = ("study", "storage")
_CLOSE = 1e-9  # a value converted back that misses a bound by this much (relative) is on the bound


@dataclass(frozen=True)
class Enqueued:
    """One ``study.enqueue`` entry: ``label`` names it (``"#1"`` or the file's path), ``params`` are the
    trial's fixed params (parameter names as :attr:`SearchSpace.names`, values in the sampled coordinates)."""

    label: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class WarmStart:
    """``study.warm_start``: the study whose COMPLETE trials are copied, and its storage (None: found as the
    sweep's own study is, see :func:`~lightopt.sweep.study.warm_start`)."""

    study: str
    storage: str | None = None


def parse_warm_start(value: Any) -> WarmStart | None:
    """``{study: NAME, storage: URL}`` or ``NAME`` -> :class:`WarmStart`. Raises ``TypeError``/``ValueError``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"study": value}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"`study.warm_start` must be a mapping such as {{study: old, storage: ...}}, but got {value!r}."
        )
    _validation.check_known_keys(value, WARM_START_KEYS, "study.warm_start")
    name, storage = value.get("study"), value.get("storage")
    if not isinstance(name, str) or not name:
        raise ValueError(f"`study.warm_start.study` must name the study to copy trials from, but got study={name!r}.")
    if storage is not None and (not isinstance(storage, str) or not storage):
        raise TypeError(f"`study.warm_start.storage` must be a database URL or a journal path, but got {storage!r}.")
    return WarmStart(name, storage)


def check_enqueue(value: Any) -> tuple[Any, ...]:
    """The shape of ``study.enqueue``: a list of mappings and paths (strings). Raises ``TypeError``."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise TypeError(
            "`study.enqueue` must be a list of settings (mappings of searched keys to values) or run config "
            f"paths, but got {value!r}."
        )
    for number, entry in enumerate(value, 1):
        if not isinstance(entry, (Mapping, str)) or not entry:
            raise TypeError(
                f"`study.enqueue` entry {number} must be a mapping such as {{optimizer.init_args.lr: 0.01}} or a "
                f"run config path such as best.yaml, but got {entry!r}."
            )
    return tuple(value)


def parse_enqueue(
    entries: Sequence[Any], space: SearchSpace, run: Mapping[str, Any], folder: Path | None = None
) -> tuple[Enqueued, ...]:
    """The ``study.enqueue`` entries as trial params; paths are relative to ``folder`` (the sweep file's).

    Raises ``ValueError`` naming the entry (``study.enqueue entry 2 (best.yaml): ...``).
    """
    parsed = []
    for number, entry in enumerate(entries, 1):
        if isinstance(entry, str):
            path = Path(entry) if folder is None or Path(entry).is_absolute() else folder / entry
            where = f"`study.enqueue` entry {number} ({entry})"
            try:
                config, _ = read_yaml(path)
            except ConfigError as error:
                raise ValueError(f"{where}: {error.message} at {path}.") from None
            if not isinstance(config, Mapping):
                raise ValueError(f"{where} must be a run config (a mapping), but the file holds {config!r}.")
            values = {p.key: get_key(config, p.key) for p in space if get_key(config, p.key, None) is not None}
            if not values:
                raise ValueError(f"{where} sets none of the searched keys {[p.key for p in space]}.")
            label = entry
        else:
            where = f"`study.enqueue` entry {number}"
            values, label = dict(entry), f"#{number}"
        parsed.append(Enqueued(label, _params(values, space, run, where, from_file=isinstance(entry, str))))
    return tuple(parsed)


def _params(
    values: Mapping[str, Any], space: SearchSpace, run: Mapping[str, Any], where: str, from_file: bool
) -> dict[str, Any]:
    """``values`` (dotted key -> config value) as trial params in the space's sampled coordinates."""
    by_key = {p.key: p for p in space}
    for key in values:
        if key not in by_key:
            raise ValueError(
                f"{where}: `{key}` is not searched; an entry sets keys of the `search` block, which has "
                f"{list(by_key)}.{_validation.did_you_mean(key, list(by_key))}"
            )
    config = _copy_with(run, values)  # the entry's values over the file's: what a conversion reads
    params = {}
    for param in space:  # file order, as a trial sets them
        if param.key not in values:
            continue
        value = values[param.key]
        if param.kind == "categorical":
            params[param.name] = _choice(param, value, where, from_file)
            continue
        if not param.coordinate.raw:
            needs = [k for k in (param.coordinate.momentum_key, param.coordinate.batch_key) if k is not None]
            sampled = [k for k in needs if k in by_key and k not in values]
            if sampled:
                raise ValueError(
                    f"{where}: `{param.key}` is converted from {param.name.partition(':')[2]} with `{sampled[0]}`, "
                    "which is searched: give its value in the entry too, or leave both out."
                )
            if not _validation.is_real(value):
                raise ValueError(f"{where}: `{param.key}` must be a number, but got {param.key}={value!r}.")
            try:
                value = param.coordinate.from_config(value, config)
            except ValueError as error:
                raise ValueError(f"{where}: `{param.key}`={values[param.key]!r} cannot be converted: {error}") from None
        params[param.name] = _in_range(param, value, values[param.key], where)
    return params


def _copy_with(run: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(dict(run))
    for key, value in values.items():
        set_key(config, key, value)
    return config


def _in_range(param: Param, value: Any, given: Any, where: str) -> Any:
    """``value`` (sampled coordinate) checked by :meth:`Param.refuses`; a conversion's rounding past a bound undone."""
    coordinate = param.name.partition(":")[2]
    shown = f"`{param.key}`={given!r}" + (f" (as {coordinate} {value:.6g})" if coordinate and value != given else "")
    if _validation.is_real(value) and param.kind == "float":
        value = float(value)
        for bound in (param.low, param.high):  # outside by a rounding of the conversion: on the bound
            if not param.low <= value <= param.high and abs(value - bound) <= _CLOSE * max(abs(bound), 1e-300):
                value = float(bound)
    problem = param.refuses(value)
    if problem is not None:
        raise ValueError(f"{where}: {shown} is {problem} (`search.{param.key}`): change the entry or the search.")
    return int(value) if param.kind == "int" else value


def _choice(param: Param, value: Any, where: str, from_file: bool) -> Any:
    """The recorded choice for the config ``value``: itself, or the label of a mapping's choice."""
    if param.values is None:
        matches = [c for c in param.choices if type(c) is type(value) and c == value]
        if matches:
            return matches[0]
    else:
        if not from_file and isinstance(value, str) and value in param.choices:
            return value
        equal = [label for label, v in zip(param.choices, param.values) if v == value]
        if not equal and from_file and isinstance(value, Mapping) and "class_path" in value:
            equal = [
                label
                for label, v in zip(param.choices, param.values)
                if isinstance(v, Mapping) and v.get("class_path") == value["class_path"]
            ]
        if len(equal) == 1:
            return equal[0]
    raise ValueError(
        f"{where}: `{param.key}`={value!r} is not one of its choices {list(param.choices)}."
        + _validation.did_you_mean(value, param.choices)
    )
