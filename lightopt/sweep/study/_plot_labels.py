"""Readable Optuna plots: short distinct parameter labels, figures sized to fit, log axes over decades.

Optuna's matplotlib plots label each axis with the parameter's name. A sweep's names are dotted
config keys (``optimizer.init_args.lr``, ``optimizer.init_args.momentum:horizon``), and the
parallel-coordinate plot cuts every name of 20 characters or more to its first 17 and ``...``, so
two keys under ``optimizer.init_args`` both read ``optimizer.init_ar...``. The plots are drawn on the
default 6.4 × 4.8 inch figure whatever the number of parameters, so an n × n contour grid's labels
run into each other; and an axis is logarithmic only where the distribution says ``log: true``,
so a linear-searched value that spans decades is squashed against one end.

Here the plots are drawn from a copy of the study (in memory; the study itself is not touched)
whose parameters are renamed to :func:`short_labels`, whose numeric distributions are made
logarithmic for display where the sampled values :func:`spans_decades`, on a figure that
:func:`fit_figure` sizes to the number of parameters and lays out so that labels do not overlap.
:func:`draw` does all of it for one of Optuna's ``optuna.visualization.matplotlib`` functions.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial

__all__ = ["DECADES_RATIO", "display_study", "draw", "figure_size", "fit_figure", "short_labels", "spans_decades"]

#: max/min of positive values at and above which an axis is drawn on a log scale (two decades)
DECADES_RATIO = 100.0
# jsonargparse's structural key segments: they tell no two parameters apart in a label
_STRUCTURAL = frozenset({"init_args", "dict_kwargs"})


def _split(name: str) -> tuple[list[str], str]:
    """``'a.b.c:horizon'`` -> (['a', 'b', 'c'], ':horizon'): the key's segments and the coordinate suffix."""
    key, colon, coordinate = name.partition(":")
    return key.split("."), colon + coordinate


def short_labels(names: Iterable[str]) -> dict[str, str]:
    """Map each dotted parameter name to a short label that no other name in ``names`` gets.

    A label is the key's last segment (with the ``:coordinate`` suffix, if any). Where names share
    it, the nearest earlier segments that tell them apart are put in front, skipping jsonargparse's
    ``init_args`` and segments that all of them share, so that labels stay short enough for Optuna
    not to cut them. Names that still collide keep their full names, which are distinct.

    Example:
        >>> short_labels(["optimizer.init_args.lr", "lr_scheduler.init_args.lr",
        ...               "optimizer.init_args.momentum:horizon", "data.init_args.batch_size"])
        ... # doctest: +NORMALIZE_WHITESPACE
        {'optimizer.init_args.lr': 'optimizer.lr', 'lr_scheduler.init_args.lr': 'lr_scheduler.lr',
         'optimizer.init_args.momentum:horizon': 'momentum:horizon', 'data.init_args.batch_size': 'batch_size'}
    """
    names = list(dict.fromkeys(names))
    chosen: dict[str, list[str]] = {}  # name -> segments in its label, nearest first
    rest: dict[str, list[str]] = {}  # name -> earlier segments not yet looked at, nearest first
    for name in names:
        segments, _ = _split(name)
        chosen[name] = [segments[-1]]
        rest[name] = [segment for segment in segments[-2::-1] if segment not in _STRUCTURAL]

    def label(name: str) -> str:
        return ".".join(reversed(chosen[name])) + _split(name)[1]

    while True:
        groups: dict[str, list[str]] = defaultdict(list)
        for name in names:
            groups[label(name)].append(name)
        progressed = False
        for group in (g for g in groups.values() if len(g) > 1):
            before = {name: set(rest[name]) for name in group}
            for name in group:
                others = [before[other] for other in group if other != name]
                while rest[name]:
                    segment = rest[name].pop(0)
                    if not all(segment in other for other in others):  # it tells `name` apart from some
                        chosen[name].append(segment)
                        progressed = True
                        break
        if not progressed:
            break
    counts = defaultdict(int)
    for name in names:
        counts[label(name)] += 1
    result = {name: label(name) if counts[label(name)] == 1 else name for name in names}
    if len(set(result.values())) != len(result):  # a full name equal to another's label
        result = {name: name for name in names}
    return result


def spans_decades(values: Iterable[Any], ratio: float = DECADES_RATIO) -> bool:
    """Whether ``values`` are all positive finite numbers with max/min ≥ ``ratio`` (two decades).

    Example:
        >>> spans_decades([1e-4, 3e-3, 0.05]), spans_decades([0.1, 0.5, 0.9]), spans_decades([0, 1, 1000])
        (True, False, False)
    """
    numbers_ = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            return False
        numbers_.append(value)
    return len(numbers_) >= 2 and max(numbers_) / min(numbers_) >= ratio


def _display_distribution(distribution: BaseDistribution, values: list[Any]) -> BaseDistribution:
    """A log distribution covering ``values`` where they span decades on a linear numeric one."""
    if not isinstance(distribution, (FloatDistribution, IntDistribution)) or distribution.log:
        return distribution
    if not spans_decades(values):
        return distribution
    low = min([float(v) for v in values] + ([distribution.low] if distribution.low > 0 else []))
    high = max([float(v) for v in values] + [distribution.high])
    if isinstance(distribution, IntDistribution):
        return IntDistribution(math.floor(low), math.ceil(high), log=True)
    return FloatDistribution(low, high, log=True)


def _made_log(distribution: BaseDistribution, shown: BaseDistribution) -> bool:
    numeric = (FloatDistribution, IntDistribution)
    return isinstance(distribution, numeric) and isinstance(shown, numeric) and shown.log and not distribution.log


def display_study(study: optuna.Study, labels: Mapping[str, str] | None = None) -> tuple[optuna.Study, dict[str, str]]:
    """An in-memory copy of ``study`` whose parameters are named by ``labels`` (default :func:`short_labels`).

    Numeric parameters searched on a linear scale whose values span decades get a log distribution
    (Optuna's plots draw a log axis exactly where the distribution says ``log``). Values, states,
    intermediate values, system attributes (Optuna's plots read constraints there) and the study's
    attributes are copied; the trials' user attributes are not (no plot reads them, and a sweep's
    hold each trial's whole config: copying them made a drawing's time and memory grow with the
    configs' size). ``study`` and its storage are not changed. Returns ``(copy, {name: label})``.
    """
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for trial in trials for name in trial.params})
    labels = dict(short_labels(names) if labels is None else labels)
    if len({labels[name] for name in names}) != len(names):
        raise ValueError(f"labels must be distinct, but got {labels!r}.")
    values: dict[str, list[Any]] = defaultdict(list)
    for trial in trials:
        for name, value in trial.params.items():
            values[name].append(value)
    shown: dict[str, BaseDistribution] = {}
    for trial in trials:  # one display distribution per name, from the first trial that has it
        for name, distribution in trial.distributions.items():
            if name not in shown:  # computed once per name: it reads every value of the name
                shown[name] = _display_distribution(distribution, values[name])
    copy = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(), study_name=study.study_name, directions=study.directions
    )
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    renamed = []
    for trial in trials:
        distributions = {
            labels[name]: shown[name] if _made_log(dist, shown[name]) else dist
            for name, dist in trial.distributions.items()
        }
        renamed.append(
            FrozenTrial(
                number=trial.number,
                state=trial.state,
                value=None,
                values=trial.values,
                datetime_start=trial.datetime_start,
                datetime_complete=trial.datetime_complete,
                params={labels[name]: value for name, value in trial.params.items()},
                distributions=distributions,
                user_attrs={},
                system_attrs=dict(trial.system_attrs),
                intermediate_values=dict(trial.intermediate_values),
                trial_id=trial._trial_id,
            )
        )
    copy.add_trials(renamed)
    return copy, {name: labels[name] for name in names}


def figure_size(kind: str, n_params: int) -> tuple[float, float]:
    """Inches (width, height) for Optuna's plot ``kind`` of ``n_params`` parameters."""
    n = max(int(n_params), 1)
    if kind == "contour":
        if n <= 2:
            return (7.0, 5.5)
        side = 2.3 * n + 1.5
        return (side + 1.0, side)
    if kind == "parallel_coordinate":
        return (max(8.0, 1.6 * (n + 1) + 2.5), 6.0)
    if kind == "slice":
        return (max(6.4, 3.4 * n), 4.8)
    if kind == "param_importances":
        return (8.0, max(4.0, 0.5 * n + 2.0))
    return (8.0, 5.0)


@contextmanager
def _figure_defaults(kind: str, n_params: int):
    """Optuna creates its figures itself: size them and pick a layout through rcParams meanwhile."""
    import matplotlib.pyplot as plt

    # Optuna's slice plot makes its figure figure.figsize[0] / 2 wide per parameter
    size = (6.8, 4.8) if kind == "slice" else figure_size(kind, n_params)
    with plt.rc_context({"figure.figsize": size, "figure.constrained_layout.use": True, "figure.autolayout": False}):
        yield


def _restore_truncated(texts: Iterable[Any], labels: Iterable[str]) -> None:
    """Optuna's parallel-coordinate plot cuts labels of 20 characters or more to 17 and '...': undo."""
    labels = list(labels)
    for text in texts:
        shown = text.get_text()
        if shown.endswith("..."):
            candidates = [label for label in labels if label.startswith(shown[:-3]) and len(label) >= len(shown)]
            if len(candidates) == 1:
                text.set_text(candidates[0])


def fit_figure(axes: Any, kind: str, n_params: int, labels: Iterable[str] = ()) -> Any:
    """Size ``axes``' figure to ``n_params`` and lay it out so that labels do not overlap; returns the figure.

    Contour grids keep axis and tick labels on the outer edge only; parallel-coordinate labels cut by
    Optuna are restored from ``labels``; the figure gets a constrained (tight) layout.
    """
    import numpy as np

    grid = np.asarray(axes, dtype=object)
    figure = grid.flat[0].figure
    figure.set_size_inches(*figure_size(kind, n_params))
    if kind == "contour" and grid.ndim == 2 and grid.size > 1:
        for ax in grid.flat:
            ax.label_outer()
    if kind == "parallel_coordinate":
        ax = grid.flat[0]
        ticks = ax.get_xticklabels()
        _restore_truncated(ticks, list(labels))
        ax.set_xticks(ax.get_xticks(), [t.get_text() for t in ticks], rotation=330, ha="left")
    if figure.get_layout_engine() is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            figure.tight_layout()
    return figure


def draw(
    function: Callable[..., Any],
    study: optuna.Study,
    kind: str,
    shown: tuple[optuna.Study, Mapping[str, str]] | None = None,
) -> Any:
    """Call Optuna's matplotlib plot ``function`` on a :func:`display_study` of ``study``, fitted; returns its axes.

    ``shown``: that display study and its labels, already made (several plots of one study share one).
    """
    copy, labels = display_study(study) if shown is None else shown
    with _figure_defaults(kind, len(labels)):
        axes = function(copy)
    fit_figure(axes, kind, len(labels), labels.values())
    return axes
