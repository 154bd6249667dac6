"""Optuna's matplotlib plots of a study as PNG files: for ``lightopt sweep plot`` and the study's TensorBoard run."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from lightopt.runconfig import ConfigError as SweepConfigError
from lightopt.sweep.store import optuna_quiet

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
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_mpl

    from lightopt.sweep.study._plot_labels import draw

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise SweepConfigError(f"study {study.study_name!r} has no completed trial to plot.")
    n_params = len({name for t in complete for name in t.params})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, notes = [], []
    for name, function, least in _PLOTS:
        if n_params < least:
            notes.append(f"{name}: skipped, it needs at least {least} searched parameters (the study has {n_params})")
            continue
        if name == "param_importances" and len(complete) < 2:
            notes.append(f"{name}: skipped, it needs at least 2 complete trials (the study has {len(complete)})")
            continue
        with warnings.catch_warnings(), optuna_quiet():
            warnings.filterwarnings("ignore", category=ExperimentalWarning)
            try:
                axes = draw(getattr(optuna_mpl, function), study, name)  # short distinct labels, log axes, fitted sizes
            except (ValueError, RuntimeError) as error:
                notes.append(f"{name}: skipped, {error}")
                continue
        figure = np.asarray(axes, dtype=object).flat[0].figure
        path = out / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written, notes
