"""The end-of-sweep report: counts, the best trial with its parameters and seed, where the logs are."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from lightopt.sweep.spec import config_values
from lightopt.sweep.store import (
    ENQUEUED,
    WARM_START,
    best_of,
    is_copied,
    is_minimize,
    minimizes,
    objective_names,
    pareto_front,
)

__all__ = ["summary"]


def summary(
    study: optuna.Study, metric: str, directory: Path | None, storage: str | None, view: str | None = None
) -> str:
    """The end-of-sweep report: counts, the best trial with its parameters and seed, where the logs are.

    Trials copied from another study (``study.warm_start``) are counted apart and are never the best.
    ``view`` is the command that opens the logs in TensorBoard (default: TensorBoard's own on ``directory``).
    With several objectives the best trial is the Pareto front: one line per trial on it, with its
    values, parameters and seed, then the command that exports one of them.
    """
    trials = study.get_trials(deepcopy=False)
    own = [t for t in trials if not is_copied(t)]
    counts = _counts(own)
    copied = len(trials) - len(own)
    source = (study.user_attrs.get(WARM_START) or {}).get("study")
    lines = [
        f"study {study.study_name!r}: {len(own)} trials: {counts['COMPLETE']} complete, "
        f"{counts['PRUNED']} pruned, {counts['FAIL']} failed"
        + (f"; and {copied} copied from study {source!r} (warm start)" if copied else "")
    ]
    best = None if len(study.directions) > 1 else best_of(trials, is_minimize(study))
    if len(study.directions) > 1:
        lines += _front_lines(study, own)
    elif best is None:
        lines.append("no completed trial yet")
    else:
        origin = f"  (study.enqueue {best.user_attrs[ENQUEUED]})" if best.user_attrs.get(ENQUEUED) else ""
        lines.append(f"best trial {best.number}: {metric}={best.value:.6g}  seed={best.user_attrs.get('seed')}{origin}")
        converted = config_values(best.params, best.user_attrs.get("config"))  # h sampled, α trained with
        lines += [
            f"  {key}: {value!r}" + (f"  ({key.partition(':')[0]} = {converted[key]!r})" if key in converted else "")
            for key, value in best.params.items()
        ]
        if best.user_attrs.get("log_dir"):
            lines.append(f"  logs: {best.user_attrs['log_dir']}")
    if directory is not None:
        lines.append(f"logs: {directory} (view: {view or f'tensorboard --logdir {directory}'})")
    if storage is not None:
        lines.append(f"storage: {storage}")
    return "\n".join(lines)


def _front_lines(study: optuna.Study, trials: list[FrozenTrial]) -> list[str]:
    """The Pareto front, one line per trial, and how to export one of them."""
    front = pareto_front(trials, minimizes(study))
    if not front:
        return ["no completed trial yet"]
    names = objective_names(study)
    goals = ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, study.directions))
    lines = [f"Pareto front: {len(front)} trial{'s' if len(front) != 1 else ''} ({goals})"]
    for trial in front:
        values = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, trial.values))
        params = ", ".join(f"{key}={value!r}" for key, value in trial.params.items())
        lines.append(f"  trial {trial.number}: {values}  seed={trial.user_attrs.get('seed')}  {params}".rstrip())
    lines.append(f"  choose one: lightopt sweep best {study.study_name} --trial K --export PATH")
    return lines


def _counts(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    return counts
