"""Warm starts, done once before a study's first trial: another study's trials copied in, known settings enqueued.

``study.warm_start: {study: OLD, storage: URL}`` (:func:`warm_start`) copies the COMPLETE trials of
study ``OLD`` into the new study with ``optuna.trial.create_trial`` and ``study.add_trials``, so the
sampler starts from them. The rule for what is copied:

* a parameter is kept when the current ``search`` has one of the same name (the dotted key, with
  ``:coordinate`` for a converted one) and its recorded value is one the current space can draw
  (:meth:`~lightopt.sweep.spec.Param.refuses`: in the range, on the ``step`` grid, one of the
  choices); it is recorded under the current distribution, so the sampler sees one distribution
  per name. A value outside a narrowed range skips the trial, it is not clipped.
* a trial is copied when it has a value for every current parameter without a ``when``
  condition (a conditional one may be absent, as it is from trials where its condition failed).
  Parameters the current search no longer has are dropped from the copy.
* the old study must have the same direction and, where recorded, the same metric.

Copied trials keep their value and intermediate values (a pruner compares with them too) and get
the user attribute ``copied_from: {study, trial}``. They are not run in this study and have no
config or logs here: they never count toward ``n_trials``, and the best trial that ``sweep run``,
``sweep show`` and ``sweep best`` report is chosen among the trials run in this study
(:func:`~lightopt.sweep.store.best_of`); Optuna's own ``study.best_trial`` sees them all.
The copy is recorded in the study's ``warm_start`` user attribute, so a resumed study does not
copy again.

Where the old study lives, when ``study.warm_start.storage`` is not given: the storage of the
sweep's own study (``--storage``, else ``study.storage``), or, with the default journal, the old
study's default journal, ``<log_dir>/OLD/study.journal``.

``study.enqueue`` (:func:`enqueue_settings`) enqueues each entry with
``study.enqueue_trial(..., skip_if_exists=True)``: a resumed study does not enqueue them again, and
an entry whose exact params a trial of the study already has (copied ones included) is not enqueued.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState, create_trial

from lightopt.runconfig import ConfigError
from lightopt.sweep.spec import Enqueued, SearchSpace, SweepFile
from lightopt.sweep.store import COPIED_FROM, ENQUEUED, JOURNAL_NAME, WARM_START, open_storage, study_dir

__all__ = ["copyable", "enqueue_settings", "find_source", "warm_start"]


def find_source(sweep: SweepFile, storage_url: str | None, name: str) -> tuple[optuna.Study, str]:
    """The study that ``study.warm_start`` names, and its storage's description, for the study ``name``.

    ``storage_url`` is the sweep's ``--storage``. Raises :class:`~lightopt.runconfig.ConfigError` when
    it names this study, cannot be found, or has another direction or metric. Reads only.
    """
    spec = sweep.study
    source = spec.warm_start
    if source.study == name:
        raise ConfigError(
            f"`study.warm_start.study` must name another study than this one ({name!r}), which resumes "
            "its own trials by itself: give the old study's name, and this one a new `study.name`.",
            sweep.path,
        )
    own = storage_url if storage_url is not None else spec.storage
    url = source.storage if source.storage is not None else own
    where = "study.warm_start.storage" if source.storage is not None else "study.warm_start"
    directory = study_dir(spec.log_dir, source.study)
    if url is None and not (directory / JOURNAL_NAME).is_file():
        raise ConfigError(
            f"`study.warm_start.study` {source.study!r} has no journal at {directory / JOURNAL_NAME}: give its "
            "`storage` (a journal path or database URL) if it ran elsewhere.",
            sweep.path,
        )
    storage, described = open_storage(url, directory, create=False, where=where, file=sweep.path)
    try:
        old = optuna.load_study(study_name=source.study, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(
            f"`study.warm_start.study`: no study named {source.study!r} in {described}; studies there: "
            f"{', '.join(names) or 'none'}.",
            sweep.path,
        ) from None
    _check_same_measure(old, list(spec.directions), list(spec.metrics), sweep.path)
    return old, described


def warm_start(study: optuna.Study, sweep: SweepFile, storage_url: str | None = None) -> str | None:
    """Copy ``study.warm_start``'s COMPLETE trials into ``study`` once; returns the line that says what was copied.

    None when the file has no ``study.warm_start`` or the study recorded one already. ``storage_url``
    is the sweep's ``--storage``. Raises :class:`~lightopt.runconfig.ConfigError` as :func:`find_source`.
    """
    spec = sweep.study
    source = spec.warm_start if spec is not None else None
    if source is None or WARM_START in study.user_attrs:
        return None
    old, described = find_source(sweep, storage_url, study.study_name)
    complete = old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    copies, reasons = [], Counter()
    dropped: set[str] = set()
    for trial in complete:
        params, reason = copyable(trial.params, sweep.search)
        if reason is not None:
            reasons[reason] += 1
            continue
        dropped |= set(trial.params) - set(params)
        copies.append(
            create_trial(
                state=TrialState.COMPLETE,
                values=list(trial.values),
                params=params,
                distributions={name: sweep.search.param(name).distribution() for name in params},
                intermediate_values=dict(trial.intermediate_values),
                user_attrs={COPIED_FROM: {"study": source.study, "trial": trial.number}},
            )
        )
    study.add_trials(copies)
    skipped = len(complete) - len(copies)
    study.set_user_attr(
        WARM_START, {"study": source.study, "storage": described, "copied": len(copies), "skipped": skipped}
    )
    line = f"warm start: {len(copies)} of {len(complete)} complete trials of study {source.study!r} copied"
    if skipped:
        line += f"; {skipped} skipped: " + ", ".join(f"{r} ({n})" for r, n in reasons.most_common())
    if dropped:
        line += f"; not searched now, so left out of the copies: {', '.join(sorted(dropped))}"
    return line


def copyable(params: dict, space: SearchSpace) -> tuple[dict, str | None]:
    """The params of a recorded trial that ``space`` can take, or why the trial cannot be copied.

    Returns ``(kept params, None)``, or ``({}, reason)`` such as ``"lr outside [0.001, 1.0]"`` or
    ``"no momentum:horizon"``. See the module's rule.

    Example:
        >>> from lightopt.sweep.spec import parse_search
        >>> space = parse_search({"lr": {"low": 0.001, "high": 1.0}}, {"lr": 0.1})
        >>> copyable({"lr": 0.01, "wd": 0.1}, space), copyable({"lr": 2.0}, space), copyable({}, space)
        (({'lr': 0.01}, None), ({}, 'lr outside [0.001, 1.0]'), ({}, 'no lr'))
    """
    kept = {}
    for param in space:
        if param.name not in params:
            if not param.when:
                return {}, f"no {param.name}"
            continue
        problem = param.refuses(params[param.name])
        if problem is not None:
            return {}, f"{param.name} {problem}"
        kept[param.name] = params[param.name]
    return kept, None


def enqueue_settings(study: optuna.Study, entries: Sequence[Enqueued]) -> list[str]:
    """Enqueue ``study.enqueue``'s entries (skipped where the study has those params); returns the labels enqueued.

    Each enqueued trial records its entry's label in the user attribute ``enqueued``.
    """
    before = len(study.get_trials(deepcopy=False))
    enqueued = []
    for entry in entries:
        study.enqueue_trial(dict(entry.params), user_attrs={ENQUEUED: entry.label}, skip_if_exists=True)
        now = len(study.get_trials(deepcopy=False))
        if now > before:
            enqueued.append(entry.label)
        before = now
    return enqueued


def _check_same_measure(old: optuna.Study, directions: list[str], metrics: list[str], file: str | None) -> None:
    """Refuse an old study of other directions, or one recorded with other metrics (several objectives: all alike)."""
    recorded_directions = [d.name.lower() for d in old.directions]
    if recorded_directions != directions:
        plural = "s" if len(directions) > 1 else ""
        raise ConfigError(
            f"`study.warm_start.study` {old.study_name!r} must have this study's direction{plural}, "
            f"{', '.join(directions)}, but it has {', '.join(recorded_directions)}: its values cannot be compared.",
            file,
        )
    meta = old.user_attrs.get("lightopt") or {}
    recorded = meta.get("metrics") or ([meta["metric"]] if meta.get("metric") is not None else None)
    if recorded is not None and recorded != metrics:
        wanted = metrics[0] if len(metrics) == 1 else metrics
        theirs = recorded[0] if len(recorded) == 1 else recorded
        raise ConfigError(
            f"`study.warm_start.study` {old.study_name!r} must measure `study.metric` {wanted!r}, but its trials' "
            f"values are {theirs!r}: warm start from a study of the same metric.",
            file,
        )
