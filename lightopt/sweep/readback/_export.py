"""``lightopt sweep best``: the best trial's run config, which ``lightopt fit`` runs again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna

from lightopt.runconfig import ConfigError as SweepConfigError
from lightopt.runconfig import dump_yaml
from lightopt.sweep.store import best_trial

if TYPE_CHECKING:  # the spec's file module imports torch: `sweep best NAME` needs none
    from lightopt.sweep.spec import SweepFile

__all__ = ["best_config", "dump_config", "trial_run_config"]


def best_config(study: optuna.Study, sweep: SweepFile | None = None) -> tuple[dict[str, Any], optuna.trial.FrozenTrial]:
    """The run config of the best trial, ``seed_everything`` set to its seed: ``lightopt fit`` reruns it.

    Taken from the trial's recorded ``config``; rebuilt from the sweep file and the trial's params
    when the trial has none.
    """
    best = best_trial(study)
    if best is None:
        raise SweepConfigError(f"study {study.study_name!r} has no completed trial yet.")
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
) -> str:
    """``config`` as YAML under a header naming the trial, its value and seed, and the command that reruns it.

    ``title`` replaces the header's "Best trial N of study S" (``sweep best --seeds``: chosen by a mean);
    ``comments`` are more header lines (what the study's seed runs say).
    """
    metric = study.user_attrs.get("lightopt", {}).get("metric") or "value"
    title = title or f"Best trial {trial.number} of study {study.study_name!r}"
    lines = [f"{title}: {metric}={trial.value:.6g}, seed {trial.user_attrs.get('seed')}.", *comments]
    lines.append("Run it again with: lightopt fit THIS_FILE")
    return "".join(f"# {line}\n" for line in lines) + dump_yaml(config)
