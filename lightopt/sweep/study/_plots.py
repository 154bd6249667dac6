"""Optuna's matplotlib plots of a study as PNG files: for ``lightopt sweep plot`` and the study's TensorBoard run."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import optuna

from lightopt.runconfig import ConfigError as SweepConfigError
from lightopt.sweep.store import objective_names, optuna_quiet

__all__ = ["plot_study"]

# name -> (optuna.visualization.matplotlib function, least number of params)
_PLOTS = (
    ("optimization_history", "plot_optimization_history", 0),
    ("param_importances", "plot_param_importances", 2),
    ("parallel_coordinate", "plot_parallel_coordinate", 1),
    ("slice", "plot_slice", 1),
    ("contour", "plot_contour", 2),
)


def plot_study(study: optuna.Study, out_dir: str | Path) -> tuple[list[Path], list[str]]:
    """Write Optuna's matplotlib plots of ``study`` as PNG files into ``out_dir``.

    Optimization history, parameter importances (needs 2 complete trials and 2 params),
    parallel coordinates, slices and contours (needs 2 params). Returns ``(paths written,
    notes on the plots skipped)``. Uses pyplot's current backend; ``lightopt sweep plot`` sets Agg.

    With several objectives: Optuna's Pareto-front plot (``pareto_front.png``, 2 or 3 objectives),
    and the others drawn for the first objective (the one trials are pruned on), as Optuna's
    ``target=`` does.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_mpl

    from lightopt.sweep.study._plot_labels import display_study, draw

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise SweepConfigError(f"study {study.study_name!r} has no completed trial to plot.")
    n_params = len({name for t in complete for name in t.params})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, notes = [], []
    names = objective_names(study)
    shown = display_study(study)  # one relabelled copy for all the plots
    plots = _PLOTS
    if len(names) > 1:
        plots = (("pareto_front", "plot_pareto_front", 0), *_PLOTS)
    for name, function, least in plots:
        if n_params < least:
            notes.append(f"{name}: skipped, it needs at least {least} searched parameters (the study has {n_params})")
            continue
        if name == "param_importances" and len(complete) < 2:
            notes.append(f"{name}: skipped, it needs at least 2 complete trials (the study has {len(complete)})")
            continue
        if name == "pareto_front" and len(names) > 3:
            notes.append(f"{name}: skipped, Optuna draws it for 2 or 3 objectives (the study has {len(names)})")
            continue
        plot = getattr(optuna_mpl, function)
        if name == "pareto_front":
            plot = functools.partial(plot, target_names=names)
        elif len(names) > 1:
            plot = functools.partial(plot, target=_first_value, target_name=names[0])
        with warnings.catch_warnings(), optuna_quiet():
            warnings.filterwarnings("ignore", category=ExperimentalWarning)
            try:
                axes = draw(plot, study, name, shown)  # short distinct labels, log axes, fitted sizes
            except (ValueError, RuntimeError) as error:
                notes.append(f"{name}: skipped, {error}")
                continue
        figure = np.asarray(axes, dtype=object).flat[0].figure
        path = out / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written, notes


def _first_value(trial: optuna.trial.FrozenTrial) -> float:
    """The first objective's value: what the single-objective plots show of a study with several."""
    return trial.values[0]
