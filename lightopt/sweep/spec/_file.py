"""Sweep and run files: a LightningCLI run config, plus ``study`` and ``search`` blocks for a sweep.

The run config may live in the sweep file, in its own files (``--config BASE.yaml``, or the sweep
file's ``config: [BASE.yaml]``, relative to the sweep file) or both: bases first, in order, then the
sweep file's run keys, then dotted command-line overrides, as LightningCLI merges them. The sweep
file's ``lightning_cli`` block names the project's classes for a ``LightningCLI(Model, DataModule)``
project or its own ``LightningCLI`` subclass (:class:`~lightopt.runconfig.CliSpec`).

Everything a run or a sweep needs is checked here, before any study, storage or log directory
is touched: unknown keys (with the closest known one), class paths (imported), arguments the
classes do not take, the whole run config by LightningCLI's parser, the search space, the
sampler's and pruner's arguments. Errors are :class:`SweepConfigError`, whose one-line message
names the file, the line and the dotted key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightopt import _validation
from lightopt.runconfig import (
    CliSpec,
    ConfigError,
    apply_overrides,
    check_run_config,
    class_nodes,
    first_key,
    merge_configs,
    read_configs,
    read_yaml,
    resolve_class,
)
from lightopt.sweep.spec._space import SearchSpace, parse_search
from lightopt.sweep.spec._study import StudySpec, check_makers, parse_study

__all__ = ["SweepConfigError", "SweepFile", "load", "parse"]

SweepConfigError = ConfigError  # a problem in a sweep or run file: "FILE:LINE: message" on one line
_SWEEP_KEYS = ("study", "search", "config", "lightning_cli")
_CLI_KEYS = ("class_path", "model_class", "datamodule_class", "subclass_mode_model", "subclass_mode_data")


@dataclass(frozen=True)
class SweepFile:
    """A checked file: ``run`` is the merged run config (no ``study``/``search``).

    ``study`` is None and ``search`` empty for a plain run file. ``run`` is a plain dict; treat it
    as read-only (the search space and the builders copy it). ``cli`` says which LightningCLI reads
    it; ``configs`` are the base files it was merged from, in order.
    """

    run: dict[str, Any]
    study: StudySpec | None = None
    search: SearchSpace = SearchSpace()
    path: str | None = None
    cli: CliSpec = CliSpec()
    configs: tuple[str, ...] = ()


def load(
    path: str | Path | None,
    configs: Sequence[str | Path] = (),
    overrides: Sequence[tuple[str, Any]] = (),
    cli: Mapping[str, Any] | None = None,
) -> SweepFile:
    """Read and check a sweep or run file. Raises :class:`SweepConfigError`.

    ``configs`` are base run configs (``--config``) merged before the file's own run keys (after
    the file's ``config:`` list); ``overrides`` are ``(dotted key, value)`` pairs set last; ``cli``
    updates the file's ``lightning_cli`` block (e.g. ``{"model_class": ...}`` from the command line).
    ``path`` may be None when ``configs`` hold the whole run config.
    """
    data, lines, where = ({}, {}, None) if path is None else (*read_yaml(path), str(path))
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SweepConfigError(
            f"the file must be a mapping with `model` (and `data`, `trainer`, ...), but got {data!r}.", where, line=1
        )
    listed = data.get("config")
    listed = [] if listed is None else [listed] if isinstance(listed, str) else listed
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise SweepConfigError(
            f"`config` must list base config files, but got {listed!r}.", where, "config", lines.get("config")
        )
    folder = Path(path).parent if path is not None else Path(".")
    bases = [str(folder / p) for p in listed] + [str(p) for p in configs]
    base, origins = read_configs(bases)
    origins.update({key: (where, line) for key, line in lines.items()})
    own = {k: v for k, v in data.items() if k not in ("config", "lightning_cli")}
    merged = apply_overrides(merge_configs(base, own), overrides, origins)
    lightning_cli = {**(data.get("lightning_cli") or {}), **(cli or {})}
    name = Path(path).stem if path is not None else Path(bases[-1]).stem if bases else "sweep"
    return parse(merged, where, origins, default_name=name, cli=lightning_cli, configs=tuple(bases))


def parse(
    data: Any,
    file: str | None = None,
    lines: Mapping[str, Any] | None = None,
    default_name: str = "sweep",
    cli: Mapping[str, Any] | None = None,
    configs: tuple[str, ...] = (),
) -> SweepFile:
    """Check an already-loaded mapping (see :func:`load`).

    ``lines`` maps dotted keys to a line number in ``file``, or to ``(file, line)`` for a merged config.
    """
    try:
        spec = _parse_cli(cli or (data.get("lightning_cli") if isinstance(data, Mapping) else None))
        data = {k: v for k, v in data.items() if k != "lightning_cli"} if isinstance(data, Mapping) else data
        folder = Path(file).parent if file is not None else None
        return dataclasses.replace(_parse(data, default_name, spec, folder), path=file, cli=spec, configs=configs)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        message = str(error)
        key = first_key(message)
        where, line = _place(key, lines or {}, file)
        raise SweepConfigError(message, where, key, line) from None


def _place(key: str | None, lines: Mapping[str, Any], file: str | None) -> tuple[str | None, int | None]:
    """The file and line of ``key``, else of its closest enclosing key that has one."""
    while key:
        if key in lines:
            place = lines[key]
            return place if isinstance(place, tuple) else (file, place)
        key = key.rpartition(".")[0]
    return file, None


def _parse_cli(block: Any) -> CliSpec:
    if block is None:
        return CliSpec()
    if not isinstance(block, Mapping):
        raise TypeError(
            f"`lightning_cli` must be a mapping (class_path, model_class, datamodule_class), but got {block!r}."
        )
    _validation.check_known_keys(block, _CLI_KEYS, "lightning_cli")
    for key, value in block.items():
        if key.startswith("subclass_mode") and not isinstance(value, bool):
            raise TypeError(f"`lightning_cli.{key}` must be true or false, but got {key}={value!r}.")
        if not key.startswith("subclass_mode") and value is not None and not isinstance(value, str):
            raise TypeError(f"`lightning_cli.{key}` must be a class path, but got {key}={value!r}.")
    values = {"cli_class" if k == "class_path" else k: v for k, v in block.items()}
    return CliSpec(**values)


def _parse(data: Any, default_name: str, spec: CliSpec, folder: Path | None = None) -> SweepFile:
    if not isinstance(data, Mapping):
        raise TypeError(f"the file must be a mapping with `model` (and `data`, `trainer`, ...), but got {data!r}.")
    run = {k: v for k, v in data.items() if k not in _SWEEP_KEYS}
    check_run_config({**run, **{k: data[k] for k in ("study", "search") if k in data}}, spec, ("study", "search"))
    search = parse_search(data.get("search"), run)
    study = parse_study(data["study"], default_name, search, run, folder) if data.get("study") is not None else None
    for param in search:  # a choice's class paths are imported when a trial draws it: check them now
        if param.key.endswith("class_path") and param.values is None:
            for choice in param.choices:
                resolve_class(choice, f"search.{param.key}.choices")
        for label, value in zip(param.choices, param.values or ()):
            for where, node in class_nodes(value, f"search.{param.key}.choices.{label}"):
                resolve_class(node["class_path"], f"{where}.class_path")
    if study is not None:
        check_makers(study, search)
    if study is None and len(search):
        raise ValueError("`search` needs a `study` block beside it (at least `study: {n_trials: 20}`).")
    return SweepFile(run, study, search)
