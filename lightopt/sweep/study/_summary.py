"""The end-of-sweep report: counts, the best trial with its parameters and seed, where the logs are."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from lightopt.sweep.spec import config_values
from lightopt.sweep.store import ENQUEUED, WARM_START, best_of, is_copied, is_minimize

__all__ = ["summary"]


def summary(
    study: optuna.Study, metric: str, directory: Path | None, storage: str | None, view: str | None = None
) -> str:
    """The end-of-sweep report: counts, the best trial with its parameters and seed, where the logs are.

    Trials copied from another study (``study.warm_start``) are counted apart and are never the best.
    ``view`` is the command that opens the logs in TensorBoard (default: TensorBoard's own on ``directory``).
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
    best = best_of(trials, is_minimize(study))
    if best is None:
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


def _counts(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    return counts
