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
import importlib.util
import inspect
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from lightopt.runconfig import (
    CliSpec,
    ConfigError,
    apply_overrides,
    check_run_config,
    class_nodes,
    did_you_mean,
    first_key,
    merge_configs,
    read_configs,
    read_yaml,
    resolve_class,
)
from lightopt.sweep.failures import RETRIES, STOP_AFTER_SAME_FAILURES, check_retries, check_stop_after
from lightopt.sweep.space import SearchSpace, parse_search

__all__ = ["SweepConfigError", "StudySpec", "SweepFile", "load", "parse", "SAMPLERS", "PRUNERS", "STUDY_NAME"]

SweepConfigError = ConfigError  # a problem in a sweep or run file: "FILE:LINE: message" on one line
_SWEEP_KEYS = ("study", "search", "config", "lightning_cli")
_CLI_KEYS = ("class_path", "model_class", "datamodule_class", "subclass_mode_model", "subclass_mode_data")
_STUDY_KEYS = (
    "name", "direction", "metric", "n_trials", "timeout", "seed", "sampler", "pruner", "report_at", "storage", "log_dir",
    "threads", "stop_after_same_failures", "retries",
)
SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "grid": optuna.samplers.GridSampler,
}
PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}
_SAMPLER_NEEDS = {"cmaes": "cmaes", "gp": "scipy"}
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a study name that is also a folder name
_NAME = STUDY_NAME


@dataclass(frozen=True)
class StudySpec:
    """The ``study`` block. ``sampler`` and ``pruner`` are ``{"name": ..., **Optuna's arguments}``.

    ``threads`` sets ``torch.set_num_threads`` during the sweep (None: torch's default); tiny
    models train several times faster on 1 thread, above all on a busy machine.
    ``stop_after_same_failures`` stops a run whose first that many trials all failed the same way
    (0: never); see :class:`lightopt.sweep.failures.FailureWatch`.
    """

    name: str
    direction: str = "minimize"
    metric: str = "val_loss"
    n_trials: int = 20
    timeout: float | None = None
    seed: int = 0
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"name": "tpe"})
    pruner: Mapping[str, Any] = field(default_factory=lambda: {"name": "median"})
    report_at: str = "validation_round"
    storage: str | None = None
    log_dir: str = "runs"
    threads: int | None = None
    stop_after_same_failures: int = STOP_AFTER_SAME_FAILURES
    retries: int = RETRIES  # how often a trial whose worker died (os._exit, a segfault, the OOM killer) runs again

    def make_sampler(self, space: SearchSpace, seed: Any = ...) -> optuna.samplers.BaseSampler:
        """A fresh sampler; its seed is ``seed`` if given, else the block's, else the study's; ``grid``
        lists the space's values."""
        args = {k: v for k, v in self.sampler.items() if k != "name"}
        cls = SAMPLERS[self.sampler["name"]]
        if "seed" in inspect.signature(cls).parameters:
            args.setdefault("seed", self.seed)
            if seed is not ...:
                args["seed"] = seed
        if cls is optuna.samplers.GridSampler:
            args.setdefault("search_space", space.grid())
        return cls(**args)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        args = {k: v for k, v in self.pruner.items() if k != "name"}
        return PRUNERS[self.pruner["name"]](**args)


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
        raise SweepConfigError(f"the file must be a mapping with `model` (and `data`, `trainer`, ...), but got {data!r}.",
                               where, line=1)
    listed = data.get("config")
    listed = [] if listed is None else [listed] if isinstance(listed, str) else listed
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise SweepConfigError(f"`config` must list base config files, but got {listed!r}.", where,
                               "config", lines.get("config"))
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
        return dataclasses.replace(_parse(data, default_name, spec), path=file, cli=spec, configs=configs)
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
        raise TypeError(f"`lightning_cli` must be a mapping (class_path, model_class, datamodule_class), but got {block!r}.")
    for key, value in block.items():
        if key not in _CLI_KEYS:
            raise ValueError(f"`lightning_cli.{key}` is not a known key.{did_you_mean(key, _CLI_KEYS)} Known keys: "
                             f"{', '.join(_CLI_KEYS)}.")
        if key.startswith("subclass_mode") and not isinstance(value, bool):
            raise TypeError(f"`lightning_cli.{key}` must be true or false, but got {key}={value!r}.")
        if not key.startswith("subclass_mode") and value is not None and not isinstance(value, str):
            raise TypeError(f"`lightning_cli.{key}` must be a class path, but got {key}={value!r}.")
    values = {"cli_class" if k == "class_path" else k: v for k, v in block.items()}
    return CliSpec(**values)


def _parse(data: Any, default_name: str, spec: CliSpec) -> SweepFile:
    if not isinstance(data, Mapping):
        raise TypeError(f"the file must be a mapping with `model` (and `data`, `trainer`, ...), but got {data!r}.")
    run = {k: v for k, v in data.items() if k not in _SWEEP_KEYS}
    check_run_config({**run, **{k: data[k] for k in ("study", "search") if k in data}}, spec, ("study", "search"))
    study = _parse_study(data["study"], default_name) if data.get("study") is not None else None
    search = parse_search(data.get("search"), run)
    for param in search:  # a choice's class paths are imported when a trial draws it: check them now
        if param.key.endswith("class_path") and param.values is None:
            for choice in param.choices:
                resolve_class(choice, f"search.{param.key}.choices")
        for label, value in zip(param.choices, param.values or ()):
            for where, node in class_nodes(value, f"search.{param.key}.choices.{label}"):
                resolve_class(node["class_path"], f"{where}.class_path")
    if study is not None:
        _check_makers(study, search)
    if study is None and len(search):
        raise ValueError("`search` needs a `study` block beside it (at least `study: {n_trials: 20}`).")
    return SweepFile(run, study, search)


def _parse_study(study: Any, default_name: str) -> StudySpec:
    if not isinstance(study, Mapping):
        raise TypeError(f"`study` must be a mapping (name, metric, n_trials, ...), but got {study!r}.")
    for key in study:
        if key not in _STUDY_KEYS:
            raise ValueError(f"`study.{key}` is not a known key.{did_you_mean(key, _STUDY_KEYS)} Known keys: {', '.join(_STUDY_KEYS)}.")
    values = dict(study)
    name = values.setdefault("name", default_name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"`study.name` must be letters, digits, '_', '-' or '.', but got name={name!r}.")
    _check_one_of("study.direction", values.get("direction", "minimize"), ("minimize", "maximize"))
    _check_one_of("study.report_at", values.get("report_at", "validation_round"), ("validation_round", "examples"))
    metric = values.get("metric", "val_loss")
    if not isinstance(metric, str) or not metric:
        raise TypeError(f"`study.metric` must name a logged metric such as 'val_loss', but got metric={metric!r}.")
    n_trials = values.get("n_trials", 20)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"`study.n_trials` must be an integer >= 1, but got n_trials={n_trials!r}.")
    check_timeout("study.timeout", values.get("timeout"))
    check_threads("study.threads", values.get("threads"))
    check_stop_after("study.stop_after_same_failures", values.get("stop_after_same_failures", STOP_AFTER_SAME_FAILURES))
    check_retries("study.retries", values.get("retries", RETRIES))
    seed = values.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`study.seed` must be an integer >= 0, but got seed={seed!r}.")
    for key in ("storage", "log_dir"):
        if values.get(key) is not None and not isinstance(values[key], str):
            raise TypeError(f"`study.{key}` must be a string, but got {key}={values[key]!r}.")
    values.setdefault("log_dir", "runs")
    values["log_dir"] = values["log_dir"] or "runs"
    values["sampler"] = _named("study.sampler", values.get("sampler", "tpe"), SAMPLERS)
    values["pruner"] = _named("study.pruner", values.get("pruner", "median"), PRUNERS)
    return StudySpec(**values)


def _check_makers(spec: StudySpec, space: SearchSpace) -> None:
    """Build the sampler and the pruner once, so bad Optuna arguments fail before any study exists."""
    for what, make in (("sampler", lambda: spec.make_sampler(space)), ("pruner", spec.make_pruner)):
        try:
            make()
        except (TypeError, ValueError) as error:
            if str(error).startswith("`search."):
                raise
            raise ValueError(f"`study.{what}`: {error}") from None


def check_threads(where: str, threads: Any) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"`{where}` must be an integer >= 1, but got threads={threads!r}.")


def check_timeout(where: str, timeout: Any) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout > 0 or math.isnan(timeout):
        raise ValueError(f"`{where}` must be a number of seconds > 0, but got timeout={timeout!r}.")


def _check_one_of(where: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{where}` must be one of {listed}, but got {value!r}.{did_you_mean(value, choices)}")


def _named(where: str, value: Any, table: Mapping[str, type]) -> dict[str, Any]:
    """``"tpe"`` or ``{name: tpe, seed: 0}`` -> ``{"name": "tpe", "seed": 0}``, arguments checked by name."""
    value = {"name": value} if isinstance(value, str) or value is None else value
    if not isinstance(value, Mapping) or "name" not in value:
        raise TypeError(f"`{where}` must be a name or a mapping with `name`, but got {value!r}.")
    name = "none" if value["name"] is None else value["name"]
    _check_one_of(f"{where}.name", name, tuple(table))
    needs = _SAMPLER_NEEDS.get(name) if table is SAMPLERS else None
    if needs and importlib.util.find_spec(needs) is None:
        raise ValueError(f"`{where}.name` {name!r} needs the {needs!r} package: pip install {needs}.")
    parameters = inspect.signature(table[name]).parameters
    for key in value:
        if key != "name" and key not in parameters:
            raise ValueError(f"`{where}.{key}` is not an argument of {table[name].__name__}.{did_you_mean(key, parameters)}")
    return {**value, "name": name}
