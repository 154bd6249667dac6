"""The ``study`` block of a sweep file: :class:`StudySpec`, its sampler and pruner, and the checks of its values.

Everything is checked when the file is read (:func:`parse_study`), before any study, storage or
log directory is touched; the sampler and the pruner are built once (:func:`check_makers`) so that
bad Optuna arguments fail then too. The ``--threads``, ``--timeout`` and ``--n-trials`` flags are
checked by the same functions as the block's keys.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from lightopt import _validation
from lightopt.sweep.spec._space import SearchSpace
from lightopt.sweep.spec._warm import Enqueued, WarmStart, check_enqueue, parse_enqueue, parse_warm_start

__all__ = [
    "PRUNERS",
    "RETRIES",
    "SAMPLERS",
    "STOP_AFTER_SAME_FAILURES",
    "STUDY_KEYS",
    "STUDY_NAME",
    "TRIAL_METRICS",
    "StudySpec",
    "check_makers",
    "check_n_trials",
    "check_one_of",
    "check_retries",
    "check_stop_after",
    "check_threads",
    "check_timeout",
    "parse_study",
]

STUDY_KEYS = (
    "name",
    "direction",
    "metric",
    "n_trials",
    "timeout",
    "seed",
    "sampler",
    "pruner",
    "report_at",
    "storage",
    "log_dir",
    "threads",
    "stop_after_same_failures",
    "retries",
    "enqueue",
    "warm_start",
)
SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "grid": optuna.samplers.GridSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
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
_SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)  # Optuna's CmaEsSampler refuses a study with several objectives
# Objectives lightopt measures itself rather than reads from the module's logged metrics: allowed
# after the first metric of a study with several objectives (the first is pruned on, round by round).
TRIAL_METRICS = {"trial/duration_s": "the trial's wall time in seconds, from its start to the end of its fit"}
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a study name that is also a folder name
# Three identical failures in a row, with nothing else before them: one is a fluke (an unlucky
# learning rate), two can be a coincidence, three at the start of a sweep are almost always the
# code or the file. It costs at most three trials, and `0` turns the stop off.
STOP_AFTER_SAME_FAILURES = 3
# A trial whose worker process died (os._exit, a segfault in an extension, the kernel's OOM killer)
# runs again this many times with the same parameters: once catches a machine's bad moment; a trial
# that kills its process every time then counts as failed ("its worker died 2 times") and the sweep
# goes on. `study.retries` sets it; Ctrl-C and SIGTERM never use it up.
RETRIES = 1


@dataclass(frozen=True)
class StudySpec:
    """The ``study`` block. ``sampler`` and ``pruner`` are ``{"name": ..., **Optuna's arguments}``.

    ``threads`` sets ``torch.set_num_threads`` during the sweep (None: torch's default); tiny
    models train several times faster on 1 thread, above all on a busy machine.
    ``stop_after_same_failures`` stops a run whose first that many trials all failed the same way
    (0: never); see :class:`lightopt.sweep.study.FailureWatch`. ``enqueue`` are the settings tried
    first (:class:`~lightopt.sweep.spec.Enqueued`), ``warm_start`` the study whose trials are
    copied in before the first trial (:class:`~lightopt.sweep.spec.WarmStart`).

    Several objectives: ``metrics`` and ``directions`` hold one entry per objective (a file's
    ``metric: [val_loss, n_params]``); ``metric`` and ``direction`` are then the first one's, the
    metric trials are pruned on. A single-objective study has one entry in each.
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
    enqueue: tuple[Enqueued, ...] = ()
    warm_start: WarmStart | None = None
    metrics: tuple[str, ...] = ()  # every objective's metric, the first one `metric` (filled in from it if empty)
    directions: tuple[str, ...] = ()  # and their directions, the first one `direction`

    def __post_init__(self) -> None:
        if not self.metrics:
            object.__setattr__(self, "metrics", (self.metric,))
        if not self.directions:
            object.__setattr__(self, "directions", (self.direction,) * len(self.metrics))

    @property
    def multi_objective(self) -> bool:
        """Whether the study has several objectives (``study.metric`` a list)."""
        return len(self.metrics) > 1

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


def parse_study(
    study: Any,
    default_name: str,
    space: SearchSpace = SearchSpace(),
    run: Mapping[str, Any] | None = None,
    folder: Path | None = None,
) -> StudySpec:
    """Check the ``study`` block; ``study.enqueue`` is checked against ``space`` over the run config ``run``,
    its paths relative to ``folder`` (the sweep file's)."""
    if not isinstance(study, Mapping):
        raise TypeError(f"`study` must be a mapping (name, metric, n_trials, ...), but got {study!r}.")
    _validation.check_known_keys(study, STUDY_KEYS, "study")
    values = dict(study)
    name = values.setdefault("name", default_name)
    if not isinstance(name, str) or not STUDY_NAME.match(name):
        raise ValueError(f"`study.name` must be letters, digits, '_', '-' or '.', but got name={name!r}.")
    check_one_of("study.report_at", values.get("report_at", "validation_round"), ("validation_round", "examples"))
    values.update(_objectives(values.get("metric", "val_loss"), values.get("direction", "minimize")))
    check_n_trials("study.n_trials", values.get("n_trials", 20))
    check_timeout("study.timeout", values.get("timeout"))
    check_threads("study.threads", values.get("threads"))
    check_stop_after("study.stop_after_same_failures", values.get("stop_after_same_failures", STOP_AFTER_SAME_FAILURES))
    check_retries("study.retries", values.get("retries", RETRIES))
    seed = values.get("seed", 0)
    if not _validation.is_integer(seed, low=0):
        raise ValueError(f"`study.seed` must be an integer >= 0, but got seed={seed!r}.")
    for key in ("storage", "log_dir"):
        if values.get(key) is not None and not isinstance(values[key], str):
            raise TypeError(f"`study.{key}` must be a string, but got {key}={values[key]!r}.")
    values.setdefault("log_dir", "runs")
    values["log_dir"] = values["log_dir"] or "runs"
    sampler = values.get("sampler", "tpe")
    sampler_name = sampler.get("name") if isinstance(sampler, Mapping) else sampler
    if len(values.get("metrics", ())) > 1 and sampler_name in _SINGLE_OBJECTIVE_SAMPLERS:
        usable = ", ".join(repr(name) for name in SAMPLERS if name not in _SINGLE_OBJECTIVE_SAMPLERS)
        raise ValueError(
            f"`study.sampler.name` {sampler_name!r} samples for one objective only, but `study.metric` "
            f"lists {len(values['metrics'])}: use one of {usable} (default 'tpe')."
        )
    values["sampler"] = _named("study.sampler", sampler, SAMPLERS)
    values["pruner"] = _named("study.pruner", values.get("pruner", "median"), PRUNERS)
    values["enqueue"] = parse_enqueue(check_enqueue(values.get("enqueue")), space, run or {}, folder)
    values["warm_start"] = parse_warm_start(values.get("warm_start"))
    return StudySpec(**values)


def _objectives(metric: Any, direction: Any) -> dict[str, Any]:
    """``metric`` and ``direction`` as given (one objective) or lists (several): the StudySpec fields they set.

    A list of metrics takes a list of directions of the same length, or one direction for all of them.
    """
    several = isinstance(metric, (list, tuple))
    metrics = list(metric) if several else [metric]
    for name in metrics:
        if not isinstance(name, str) or not name:
            raise TypeError(
                "`study.metric` must name a logged metric such as 'val_loss', or list several, "
                f"but got metric={metric!r}."
            )
    if several and not metrics:
        raise ValueError("`study.metric` must list at least one metric, but got metric=[].")
    if metrics[0] in TRIAL_METRICS:
        raise ValueError(
            f"`study.metric` must start with a metric the module logs at each validation round (trials are pruned "
            f"on it), but got {metrics[0]!r}, which lightopt measures once per trial: put it after such a metric."
        )
    if several and len(set(metrics)) < len(metrics):
        raise ValueError(f"`study.metric` must list each metric once, but got metric={metrics!r}.")
    if isinstance(direction, (list, tuple)):
        if len(direction) != len(metrics):
            raise ValueError(
                f"`study.direction` must list one direction per metric ({len(metrics)}: {', '.join(metrics)}), "
                f"or be one direction for all, but got direction={list(direction)!r}."
            )
        directions = list(direction)
    else:
        directions = [direction] * len(metrics)
    for value in directions:
        check_one_of("study.direction", value, ("minimize", "maximize"))
    if not several:
        return {"metric": metrics[0], "direction": directions[0]}
    first = {"metric": metrics[0], "direction": directions[0]}
    return {**first, "metrics": tuple(metrics), "directions": tuple(directions)}


def check_makers(spec: StudySpec, space: SearchSpace) -> None:
    """Build the sampler and the pruner once, so bad Optuna arguments fail before any study exists."""
    for what, make in (("sampler", lambda: spec.make_sampler(space)), ("pruner", spec.make_pruner)):
        try:
            make()
        except (TypeError, ValueError) as error:
            if str(error).startswith("`search."):
                raise
            raise ValueError(f"`study.{what}`: {error}") from None


def check_n_trials(where: str, n_trials: Any) -> None:
    """Raise ``ValueError`` unless ``n_trials`` is an integer >= 1."""
    if not _validation.is_integer(n_trials, low=1):
        raise ValueError(f"`{where}` must be an integer >= 1, but got n_trials={n_trials!r}.")


def check_threads(where: str, threads: Any) -> None:
    """Raise ``ValueError`` unless ``threads`` is None or an integer >= 1."""
    if threads is not None and not _validation.is_integer(threads, low=1):
        raise ValueError(f"`{where}` must be an integer >= 1, but got threads={threads!r}.")


def check_timeout(where: str, timeout: Any) -> None:
    """Raise ``ValueError`` unless ``timeout`` is None or a number of seconds > 0."""
    if timeout is None:
        return
    if not _validation.is_real(timeout) or not timeout > 0:  # NaN is not > 0
        raise ValueError(f"`{where}` must be a number of seconds > 0, but got timeout={timeout!r}.")


def check_one_of(where: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``, with the closest one."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"`{where}` must be one of {listed}, but got {value!r}.{_validation.did_you_mean(value, choices)}"
        )


def _named(where: str, value: Any, table: Mapping[str, type]) -> dict[str, Any]:
    """``"tpe"`` or ``{name: tpe, seed: 0}`` -> ``{"name": "tpe", "seed": 0}``, arguments checked by name."""
    value = {"name": value} if isinstance(value, str) or value is None else value
    if not isinstance(value, Mapping) or "name" not in value:
        raise TypeError(f"`{where}` must be a name or a mapping with `name`, but got {value!r}.")
    name = "none" if value["name"] is None else value["name"]
    check_one_of(f"{where}.name", name, tuple(table))
    needs = _SAMPLER_NEEDS.get(name) if table is SAMPLERS else None
    if needs and importlib.util.find_spec(needs) is None:
        raise ValueError(f"`{where}.name` {name!r} needs the {needs!r} package: pip install {needs}.")
    parameters = inspect.signature(table[name]).parameters
    for key in value:
        if key != "name" and key not in parameters:
            raise ValueError(
                f"`{where}.{key}` is not an argument of {table[name].__name__}."
                f"{_validation.did_you_mean(key, parameters)}"
            )
    return {**value, "name": name}


def check_stop_after(where: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 0."""
    if not _validation.is_integer(value, low=0):
        raise ValueError(
            f"`{where}` must be an integer >= 0 (0: never stop), but got {where.rpartition('.')[2]}={value!r}."
        )


def check_retries(where: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 0."""
    if not _validation.is_integer(value, low=0):
        raise ValueError(
            f"`{where}` must be an integer >= 0 (0: a trial whose worker died is not run again), but "
            f"got {where.rpartition('.')[2]}={value!r}."
        )
