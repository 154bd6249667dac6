"""Sweep and run files: a LightningCLI-style config, plus ``study`` and ``search`` blocks for a sweep.

Everything a run or a sweep needs is checked here, before any study, storage or log directory
is touched: unknown keys (with the closest known one), class paths (imported), arguments the
classes do not take, the search space, the sampler's and pruner's arguments. Errors are
:class:`SweepConfigError`, whose one-line message names the file, the line and the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import inspect
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning
import optuna
import torch
import yaml

from lightopt.sweep import _paths
from lightopt.sweep._imports import import_class, init_parameters, suggest
from lightopt.sweep.failures import RETRIES, STOP_AFTER_SAME_FAILURES, check_retries, check_stop_after
from lightopt.sweep.space import SearchSpace, parse_search

__all__ = ["SweepConfigError", "StudySpec", "SweepFile", "load", "parse", "SAMPLERS", "PRUNERS"]

RUN_KEYS = ("model", "data", "trainer", "optimizer", "lr_scheduler", "seed_everything")
_TOP_KEYS = ("study", "search", *RUN_KEYS)
_STUDY_KEYS = (
    "name", "direction", "metric", "n_trials", "timeout", "seed", "sampler", "pruner", "report_at", "storage", "log_dir",
    "threads", "stop_after_same_failures", "retries",
)
_CLASS_KEYS = ("class_path", "init_args")
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
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SweepConfigError(ValueError):
    """A problem in a sweep or run file: ``str(error)`` is ``"FILE:LINE: message"`` on one line."""

    def __init__(self, message: str, file: str | None = None, key: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message, self.file, self.key, self.line = message, file, key, line

    def __str__(self) -> str:
        place = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        return f"{place}: {self.message}" if place else self.message


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
    """A checked file: ``run`` is the LightningCLI-style config (no ``study``/``search``).

    ``study`` is None and ``search`` empty for a plain run file. ``run`` is a plain dict; treat it
    as read-only (the search space and the builders copy it).
    """

    run: dict[str, Any]
    study: StudySpec | None = None
    search: SearchSpace = SearchSpace()
    path: str | None = None


def load(path: str | Path) -> SweepFile:
    """Read and check a sweep or run file. Raises :class:`SweepConfigError`."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepConfigError("no such file", where) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SweepConfigError(f"cannot read the file: {error}", where) from None
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SweepConfigError(f"malformed YAML: {problem}", where, line=mark.line + 1 if mark else None) from None
    return parse(data, where, lines, default_name=path.stem)


def parse(
    data: Any, file: str | None = None, lines: Mapping[str, int] | None = None, default_name: str = "sweep"
) -> SweepFile:
    """Check an already-loaded mapping (see :func:`load`); ``lines`` maps dotted keys to line numbers."""
    try:
        return dataclasses.replace(_parse(data, default_name), path=file)
    except (TypeError, ValueError) as error:
        message = str(error)
        key = _first_key(message)
        raise SweepConfigError(message, file, key, _line_of(key, lines or {})) from None


def _parse(data: Any, default_name: str) -> SweepFile:
    if not isinstance(data, Mapping):
        raise TypeError(f"the file must be a mapping with `model` (and `data`, `trainer`, ...), but got {data!r}.")
    for key in data:
        if key not in _TOP_KEYS:
            raise ValueError(f"`{key}` is not a known key.{suggest(key, _TOP_KEYS)} Known keys: {', '.join(_TOP_KEYS)}.")
    run = copy.deepcopy({k: v for k, v in data.items() if k in RUN_KEYS})
    check_run(run)
    study = _parse_study(data["study"], default_name) if data.get("study") is not None else None
    search = parse_search(data.get("search"), run)
    if study is not None:
        _check_makers(study, search)
    if study is None and len(search):
        raise ValueError("`search` needs a `study` block beside it (at least `study: {n_trials: 20}`).")
    return SweepFile(run, study, search)


def check_run(run: Mapping[str, Any]) -> None:
    """Check a run config: class paths import, their arguments exist, the Trainer takes its keys."""
    if run.get("model") is None:
        raise ValueError("the file has no `model`: add `model: {class_path: ..., init_args: {...}}`.")
    _check_component(run["model"], "model", lightning.LightningModule)
    if run.get("data") is not None:
        _check_component(run["data"], "data", lightning.LightningDataModule)
    trainer = run.get("trainer") or {}
    if not isinstance(trainer, Mapping):
        raise TypeError(f"`trainer` must be a mapping of Trainer arguments, but got {trainer!r}.")
    known = init_parameters(lightning.Trainer) or {}
    for key in trainer:
        if key not in known:
            raise ValueError(f"`trainer.{key}` is not a Trainer argument.{suggest(key, known)}")
    callbacks = trainer.get("callbacks") or []
    for i, callback in enumerate(callbacks if isinstance(callbacks, list) else [callbacks]):
        _check_component(callback, f"trainer.callbacks.{i}", lightning.pytorch.Callback)
    logger = trainer.get("logger")
    if logger is not None and not isinstance(logger, bool):
        for i, one in enumerate(logger if isinstance(logger, list) else [logger]):
            _check_component(one, f"trainer.logger.{i}" if isinstance(logger, list) else "trainer.logger", object)
    if run.get("optimizer") is not None:
        _check_optimizer(run["optimizer"], "optimizer", torch.optim.Optimizer)
    schedulers = run.get("lr_scheduler")
    if schedulers is not None:
        if run.get("optimizer") is None:
            raise ValueError("`lr_scheduler` needs an `optimizer` beside it: together they replace configure_optimizers.")
        many = isinstance(schedulers, list)
        for i, scheduler in enumerate(schedulers if many else [schedulers]):
            where = f"lr_scheduler.{i}" if many else "lr_scheduler"
            _check_optimizer(scheduler, where, torch.optim.lr_scheduler.LRScheduler)
    seed = run.get("seed_everything")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"`seed_everything` must be an integer >= 0, but got seed_everything={seed!r}.")


def _check_component(config: Any, where: str, base: type) -> None:
    if not isinstance(config, Mapping) or "class_path" not in config:
        raise TypeError(f"`{where}` must be a mapping with `class_path` and `init_args`, but got {config!r}.")
    for key in config:
        if key not in _CLASS_KEYS:
            raise ValueError(f"`{where}.{key}` is not a known key.{suggest(key, _CLASS_KEYS)} Known keys: class_path, init_args.")
    cls = import_class(config["class_path"], f"{where}.class_path")
    if not issubclass(cls, base):
        raise TypeError(f"`{where}.class_path` must name a {base.__name__} subclass, but {config['class_path']!r} is not one.")
    _check_init_args(config.get("init_args"), cls, where)


def _check_optimizer(config: Any, where: str, base: type) -> None:
    from lightopt.mixin import _OPTIMIZER_KEYS, _SCHEDULER_KEYS, _parse

    keys = _OPTIMIZER_KEYS if base is torch.optim.Optimizer else _SCHEDULER_KEYS
    cls, init_args, _ = _parse(config, where, keys, base)
    _check_init_args(init_args, cls, where)


def _check_init_args(init_args: Any, cls: type, where: str) -> None:
    if init_args is None:
        return
    if not isinstance(init_args, Mapping):
        raise TypeError(f"`{where}.init_args` must be a mapping, but got {init_args!r}.")
    parameters = init_parameters(cls)
    if parameters is None:
        return
    for key in init_args:
        if key not in parameters:
            raise ValueError(f"`{where}.init_args.{key}` is not an argument of {cls.__name__}.{suggest(key, parameters)}")


def _parse_study(study: Any, default_name: str) -> StudySpec:
    if not isinstance(study, Mapping):
        raise TypeError(f"`study` must be a mapping (name, metric, n_trials, ...), but got {study!r}.")
    for key in study:
        if key not in _STUDY_KEYS:
            raise ValueError(f"`study.{key}` is not a known key.{suggest(key, _STUDY_KEYS)} Known keys: {', '.join(_STUDY_KEYS)}.")
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
        raise ValueError(f"`{where}` must be one of {listed}, but got {value!r}.{suggest(value, choices)}")


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
            raise ValueError(f"`{where}.{key}` is not an argument of {table[name].__name__}.{suggest(key, parameters)}")
    return {**value, "name": name}


def _key_lines(node: Any, prefix: str = "", lines: dict[str, int] | None = None) -> dict[str, int]:
    """Dotted key -> 1-based line, from the YAML node tree."""
    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines.setdefault(key, key_node.start_mark.line + 1)
            _key_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{prefix}.{i}"
            lines.setdefault(key, item.start_mark.line + 1)
            _key_lines(item, key, lines)
    return lines


def _first_key(message: str) -> str | None:
    match = re.search(r"`([^`\s]+)`", message)
    return match.group(1) if match else None


def _line_of(key: str | None, lines: Mapping[str, int]) -> int | None:
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None
