"""The single-objective view of a study with several objectives: Optuna's pruners decide on it as on a real study."""

from __future__ import annotations

import random

import optuna
import pytest

from lightopt.sweep.trial._first_objective import (
    INTERMEDIATE_ATTR,
    PRUNER_ATTR,
    first_objective_view,
    recorded_reports,
    should_prune_first,
)

PRUNERS = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    "percentile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=1),
    "threshold": lambda: optuna.pruners.ThresholdPruner(upper=0.8, lower=-0.8),  # curves of either sign
    "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=6, reduction_factor=2),
}


def _curves(seed: int, n_trials: int = 14, steps: int = 6) -> list[list[float]]:
    """Learning curves: each trial a level plus a decay, some clearly bad, all in [0, 1.5]."""
    rng = random.Random(seed)
    curves = []
    for _ in range(n_trials):
        level, bad = rng.uniform(0.05, 0.5), rng.random() < 0.3
        curves.append([level + (0.9 if bad else 0.5) / (step + 1) + rng.uniform(0, 0.05) for step in range(steps)])
    return curves


def _decisions(study: optuna.Study, curves: list[list[float]], several: bool) -> list[int | None]:
    """Run ``curves`` as trials, one after the other; the step each was pruned at (None: completed)."""
    pruned_at = []
    for curve in curves:
        trial = study.ask()
        decision = None
        for step, value in enumerate(curve, start=1):
            if several:
                trial.set_user_attr(INTERMEDIATE_ATTR, {str(s): v for s, v in enumerate(curve[:step], start=1)})
                prune = should_prune_first(trial)
            else:
                trial.report(value, step)
                prune = trial.should_prune()
            if prune:
                decision = step
                break
        if decision is None:
            study.tell(trial, [min(curve), len(pruned_at)] if several else min(curve))
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        pruned_at.append(decision)
    return pruned_at


@pytest.mark.parametrize("name", PRUNERS)
@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_the_view_prunes_exactly_as_the_pruner_on_a_single_objective_study(name, direction):
    curves = _curves(seed=len(name))
    if direction == "maximize":
        curves = [[-v for v in curve] for curve in curves]
    single = optuna.create_study(study_name="s", direction=direction, pruner=PRUNERS[name]())
    several = optuna.create_study(study_name="s", directions=[direction, "minimize"], pruner=PRUNERS[name]())
    expected = _decisions(single, curves, several=False)
    assert any(step is not None for step in expected) and any(step is None for step in expected)  # both outcomes
    assert _decisions(several, curves, several=True) == expected


def test_what_successive_halving_writes_on_a_trial_is_kept_in_its_user_attributes():
    study = optuna.create_study(
        directions=["minimize", "minimize"],
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
    )
    _decisions(study, _curves(seed=3, n_trials=4), several=True)
    kept = study.trials[0].user_attrs[PRUNER_ATTR]
    assert kept and all(key.startswith("completed_rung_") for key in kept)
    view = first_objective_view(study)
    assert view.trials[0].system_attrs == kept  # the next view gives them back to the pruner


def test_the_view_holds_every_trial_by_number_with_its_first_values():
    study = optuna.create_study(study_name="v", directions=["minimize", "maximize"])
    done = study.ask()
    done.set_user_attr(INTERMEDIATE_ATTR, {"1": 0.5, "2": 0.25})
    study.tell(done, [0.25, 7.0])
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    running = study.ask()
    running.set_user_attr(INTERMEDIATE_ATTR, {"1": 0.75})
    view = first_objective_view(study)
    assert view.study_name == "v" and view.direction == optuna.study.StudyDirection.MINIMIZE
    assert [(t.number, t.state.name, t.value) for t in view.trials] == [
        (0, "COMPLETE", 0.25),
        (1, "FAIL", None),
        (2, "RUNNING", None),
    ]
    assert view.trials[0].intermediate_values == {1: 0.5, 2: 0.25} == recorded_reports(study.trials[0])
    assert view.trials[2].intermediate_values == {1: 0.75}
