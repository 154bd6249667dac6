"""The end-of-sweep report: counts, the best trial with its parameters and seed, where the logs are."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from lightopt.sweep.spec import config_values
from lightopt.sweep.store import best_of, is_minimize

__all__ = ["summary"]


def summary(
    study: optuna.Study, metric: str, directory: Path | None, storage: str | None, view: str | None = None
) -> str:
    """The end-of-sweep report: counts, the best trial with its parameters and seed, where the logs are.

    ``view`` is the command that opens the logs in TensorBoard (default: TensorBoard's own on ``directory``).
    """
    trials = study.get_trials(deepcopy=False)
    counts = _counts(trials)
    lines = [
        f"study {study.study_name!r}: {len(trials)} trials: {counts['COMPLETE']} complete, "
        f"{counts['PRUNED']} pruned, {counts['FAIL']} failed"
    ]
    best = best_of(trials, is_minimize(study))
    if best is None:
        lines.append("no completed trial yet")
    else:
        lines.append(f"best trial {best.number}: {metric}={best.value:.6g}  seed={best.user_attrs.get('seed')}")
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


def _counts(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    return counts
