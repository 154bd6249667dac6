"""``lightopt sweep best``: the best trial's run config (or trial K's), which ``lightopt fit`` runs again.

A study with several objectives has no single best trial: without a trial number :func:`best_config`
refuses, listing the Pareto front, so that the user chooses one of its trials with ``--trial K``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna

from lightopt.runconfig import ConfigError as SweepConfigError
from lightopt.runconfig import dump_yaml
from lightopt.sweep.readback._show import trial_values
from lightopt.sweep.store import COPIED_FROM, best_trial, is_copied, minimizes, objective_names, pareto_front

if TYPE_CHECKING:  # the spec's file module imports torch: `sweep best NAME` needs none
    from lightopt.sweep.spec import SweepFile

__all__ = ["best_config", "dump_config", "trial_run_config"]


def best_config(
    study: optuna.Study, sweep: SweepFile | None = None, number: int | None = None
) -> tuple[dict[str, Any], optuna.trial.FrozenTrial]:
    """The run config of the best trial (or of trial ``number``), ``seed_everything`` set to its seed.

    ``lightopt fit`` reruns it. Taken from the trial's recorded ``config``; rebuilt from the sweep
    file and the trial's params when the trial has none. ``number`` may name any complete or pruned
    trial; it is required when the study has several objectives (the error lists the Pareto front).
    """
    best = _chosen(study, number) if number is not None else _best(study)
    return trial_run_config(best, sweep), best


def trial_run_config(trial: optuna.trial.FrozenTrial, sweep: SweepFile | None = None) -> dict[str, Any]:
    """The run config of ``trial`` (its recorded one, else the sweep file's with its params and seed)."""
    config = trial.user_attrs.get("config")
    if config is None:
        if sweep is None:
            raise SweepConfigError(
                f"trial {trial.number} has no recorded config; give the sweep file instead of the name."
            )
        from lightopt.sweep.trial import trial_config  # imports Lightning: only without a recorded config

        config = trial_config(sweep, trial.params, trial.user_attrs.get("seed"))
    return config


def dump_config(
    config: dict[str, Any],
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    title: str | None = None,
    comments: Sequence[str] = (),
    chosen: bool = False,
) -> str:
    """``config`` as YAML under a header naming the trial, its value and seed, and the command that reruns it.

    ``title`` replaces the header's "Best trial N of study S" (``sweep best --seeds``: chosen by a mean);
    ``comments`` are more header lines (what the study's seed runs say); ``chosen``: the trial was
    named with ``--trial`` (the header says "Trial K", with its state and every value).
    """
    if chosen or len(study.directions) > 1:
        values = ", ".join(
            f"{name}={value:.6g}" for name, value in zip(objective_names(study), trial_values(trial) or ())
        )
        front = ", on the Pareto front" if _on_front(study, trial) else ""
        title = title or f"Trial {trial.number} of study {study.study_name!r} ({trial.state.name.lower()}{front})"
        first = f"{title}: {values}, seed {trial.user_attrs.get('seed')}."
    else:
        metric = study.user_attrs.get("lightopt", {}).get("metric") or "value"
        title = title or f"Best trial {trial.number} of study {study.study_name!r}"
        first = f"{title}: {metric}={trial.value:.6g}, seed {trial.user_attrs.get('seed')}."
    lines = [first, *comments, "Run it again with: lightopt fit THIS_FILE"]
    return "".join(f"# {line}\n" for line in lines) + dump_yaml(config)


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial:
    if len(study.directions) > 1:
        front = pareto_front(study.get_trials(deepcopy=False), minimizes(study))
        if not front:
            raise SweepConfigError(f"study {study.study_name!r} has no completed trial yet.")
        names = objective_names(study)
        listed = "; ".join(
            f"trial {t.number} ({', '.join(f'{n}={v:.6g}' for n, v in zip(names, t.values))})" for t in front
        )
        raise SweepConfigError(
            f"study {study.study_name!r} has {len(names)} objectives ({', '.join(names)}), so no single best "
            f"trial; its Pareto front: {listed}. Choose one with --trial K."
        )
    best = best_trial(study)
    if best is None:
        raise SweepConfigError(f"study {study.study_name!r} has no completed trial yet.")
    return best


def _chosen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise SweepConfigError(
            f"`--trial` must be the number of a trial of study {study.study_name!r} (0 to {len(trials) - 1}), "
            f"but got --trial {number}."
            if trials
            else f"study {study.study_name!r} has no trial yet."
        )
    trial = trials[number]
    if trial.state.name not in ("COMPLETE", "PRUNED"):
        raise SweepConfigError(
            f"`--trial` must be a complete or pruned trial, but trial {number} is {trial.state.name.lower()}"
            f"{': ' + str(trial.user_attrs['fail_reason']) if trial.user_attrs.get('fail_reason') else ''}; "
            "see `lightopt sweep show`."
        )
    if is_copied(trial):
        source = trial.user_attrs[COPIED_FROM]
        raise SweepConfigError(
            f"trial {number} was copied from trial {source.get('trial')} of study {source.get('study')!r} "
            f"(study.warm_start) and has no run config here: export it from its own study, with "
            f"`lightopt sweep best {source.get('study')} --trial {source.get('trial')}`."
        )
    return trial


def _on_front(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    if len(study.directions) == 1:
        return False
    return any(t.number == trial.number for t in pareto_front(study.get_trials(deepcopy=False), minimizes(study)))
