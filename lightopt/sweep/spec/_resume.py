"""What a study records about its sweep file, and the check that a run resuming it still matches.

A study created by lightopt stores ``user_attrs["lightopt"]``: the ``metric``, the ``seed``, the
file and ``space`` (:func:`describe_space`). Running a file again resumes its study; before
anything is written, :func:`check_resume` refuses a different direction, metric or search space,
since the trials recorded so far would then measure something else, or come from another space,
and the sampler would mix them silently. The message names what changed and how to go on: a
changed search space goes on in a new study that copies the old one's trials that fit
(``study.name: NEW`` or ``--study-name NEW``, with ``study.warm_start: {study: OLD}``). A study
recorded without a ``space`` (made by hand,
or by an older lightopt) is accepted and gets one.

While every trial so far has failed, a corrected metric or search space goes on with the same
study ("fix the cause and run again"). Optuna itself refuses one change there: a parameter whose
distribution cannot mix with the one its earlier trials recorded (a categorical's choices changed,
a float became a categorical). :func:`failed_only_clashes` names those parameters, and the study
layer then sets the failed trials aside as a study of their own and starts the study again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from optuna.distributions import check_distribution_compatibility
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from lightopt.sweep.spec._file import SweepConfigError, SweepFile
from lightopt.sweep.spec._space import SearchSpace

__all__ = ["check_resume", "describe_space", "failed_only_clashes"]


def describe_space(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """The search space as JSON data: dotted key -> its kind, bounds, step, log, choices, values, condition.

    Example:
        >>> from lightopt.sweep.spec import parse_search
        >>> describe_space(parse_search({"trainer.max_epochs": {"low": 1, "high": 8}}, {}))
        {'trainer.max_epochs': {'kind': 'int', 'low': 1, 'high': 8}}
    """
    described = {}
    for param in space:
        fields = {
            k: v
            for k, v in dataclasses.asdict(param).items()
            if k not in ("name", "key", "coordinate") and v is not None and v is not False and v != ()
        }
        if not param.coordinate.raw:  # the name already says the coordinate; its settings may change too
            fields["coordinate"] = {k: v for k, v in dataclasses.asdict(param.coordinate).items() if v is not None}
        described[param.name] = json.loads(json.dumps(fields, default=str))  # tuples -> lists, as storages give back
    return described


def check_resume(storage: BaseStorage, name: str, sweep: SweepFile) -> bool:
    """Raise :class:`SweepConfigError` unless the stored study ``name`` (if any) matches ``sweep``.

    Reads only: returns whether the study exists. Checked: the number of objectives and their
    directions, ``study.metric`` (each one's) and the search space recorded when the study was
    created; the last two only once a trial completed or was pruned, so that "fix the cause and run
    again" holds after trials that all failed.
    """
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return False
    spec, file = sweep.study, sweep.path
    directions = [d.name.lower() for d in storage.get_study_directions(study_id)]
    stored = storage.get_study_user_attrs(study_id).get("lightopt") or {}
    if len(directions) != len(spec.directions):
        raise SweepConfigError(
            f"`study.metric` must match the stored study {name!r}, which has {_objectives(len(directions))}"
            f"{_named(stored, directions)}, but got {_objectives(len(spec.metrics))} "
            f"({', '.join(spec.metrics)}). Restore the metrics, or start a new study with --study-name NEW.",
            file,
            "study.metric",
        )
    if directions != list(spec.directions):
        stored_direction = directions[0] if len(directions) == 1 else directions
        given = spec.direction if len(directions) == 1 else list(spec.directions)
        raise SweepConfigError(
            f"`study.direction` must match the stored study {name!r}, which is {stored_direction}, "
            f"but got direction={given!r}.",
            file,
            "study.direction",
        )
    if not any(
        t.state.is_finished() and t.state.name != "FAIL" for t in storage.get_all_trials(study_id, deepcopy=False)
    ):
        return True  # only failed trials so far: a corrected metric or search space goes on with the same study
    if "metric" in stored and stored["metric"] != spec.metric:
        raise SweepConfigError(
            f"`study.metric` must match the stored study {name!r}, which is {stored['metric']!r}, but got "
            f"metric={spec.metric!r}; its trials' values are {stored['metric']}. Restore the metric, or start a "
            f"new study with --study-name NEW.",
            file,
            "study.metric",
        )
    if spec.multi_objective and stored.get("metrics", list(spec.metrics)) != list(spec.metrics):
        raise SweepConfigError(
            f"`study.metric` must match the stored study {name!r}, which is {stored['metrics']!r}, but got "
            f"metric={list(spec.metrics)!r}; its trials' values are those metrics. Restore them, or start a "
            f"new study with --study-name NEW.",
            file,
            "study.metric",
        )
    if "space" in stored:
        changes = _space_changes(stored["space"], describe_space(sweep.search))
        if changes:
            raise SweepConfigError(
                f"`search` must match the stored study {name!r}, but it changed: {changes}. The trials so far "
                f"come from the old space: restore it, or start a new study (`study.name: NEW` or --study-name NEW) "
                f"with `study.warm_start: {{study: {name}}}`, which copies in its trials that fit the new space.",
                file,
                "search",
            )
    return True


def _objectives(count: int) -> str:
    return "one objective" if count == 1 else f"{count} objectives"


def _named(stored: Mapping[str, Any], directions: list[str]) -> str:
    """`` (val_loss, n_params)``: the stored study's metrics, where recorded."""
    names = stored.get("metrics") or ([stored["metric"]] if "metric" in stored and len(directions) == 1 else None)
    return f" ({', '.join(names)})" if names else ""


def _space_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``"added a, b; removed c; changed d (low 0.01 -> 0.001)"``, or ``""`` when equal."""
    parts = []
    added = [key for key in new if key not in old]
    removed = [key for key in old if key not in new]
    if added:
        parts.append("added " + ", ".join(added))
    if removed:
        parts.append("removed " + ", ".join(removed))
    changed = []
    for key in (k for k in new if k in old and new[k] != old[k]):
        fields = sorted(set(old[key]) | set(new[key]))
        diffs = [
            f"{f} {old[key].get(f)!r} -> {new[key].get(f)!r}" for f in fields if old[key].get(f) != new[key].get(f)
        ]
        changed.append(f"{key} ({', '.join(diffs)})")
    if changed:
        parts.append("changed " + "; ".join(changed))
    return "; ".join(parts)


def failed_only_clashes(storage: BaseStorage, name: str, space: SearchSpace) -> list[str]:
    """The parameters of ``space`` that Optuna cannot record in the stored study ``name``, when all its trials failed.

    ``[]`` when the study does not exist, when a trial of it completed, was pruned or still runs
    (then :func:`check_resume` has refused a changed space), or when every recorded distribution
    mixes with ``space``'s. Each entry reads ``"a.b: choices [True] -> [False]"``.
    """
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return []
    trials = storage.get_all_trials(study_id, deepcopy=False)
    if not trials or any(t.state != TrialState.FAIL for t in trials):
        return []
    wanted = {param.name: param.distribution() for param in space}
    clashes: dict[str, str] = {}
    for trial in trials:
        for key, recorded in trial.distributions.items():
            if key not in wanted or key in clashes:
                continue
            try:
                check_distribution_compatibility(recorded, wanted[key])
            except ValueError:
                clashes[key] = f"{key}: {_change(recorded, wanted[key])}"
    return list(clashes.values())


def _change(old: Any, new: Any) -> str:
    """``"choices [True] -> [False]"``, or ``"Float -> Categorical"`` when the kind changed."""
    if hasattr(old, "choices") and hasattr(new, "choices"):
        return f"choices {list(old.choices)} -> {list(new.choices)}"
    return f"{type(old).__name__.removesuffix('Distribution')} -> {type(new).__name__.removesuffix('Distribution')}"
