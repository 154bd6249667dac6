"""Optuna sweeps from files: a LightningCLI run config (:mod:`lightopt.runconfig`) plus ``study`` and ``search`` blocks.

Five one-way layers, each a sub-package that imports only the ones below it:

1. :mod:`~lightopt.sweep.spec`: the sweep file as checked values (study block, search space,
   search coordinates, resume checks, the one seed scheme);
2. :mod:`~lightopt.sweep.store`: where a study is stored and what its records mean (Optuna only);
3. :mod:`~lightopt.sweep.trial`: one trial, from its parameters to its value and TensorBoard HParams;
4. :mod:`~lightopt.sweep.study`: a study run to its end, its workers, crash handling, progress,
   its TensorBoard run and plots;
5. :mod:`~lightopt.sweep.readback`: a stored study read back (show, best, reproduce, tensorboard).

What a user types is here:

* :func:`load` reads and checks a file, with its ``--config`` bases, into a :class:`SweepFile` (errors:
  :class:`SweepConfigError`, the same class as :class:`lightopt.runconfig.ConfigError`);
* :class:`SearchSpace` turns ``search`` into ``trial.suggest_*`` calls and back (:func:`trial_config`);
* :func:`build` / :func:`fit` run a config through LightningCLI, as ``lightopt fit`` does;
* :class:`PruningCallback` reports to Optuna from any LightningModule;
* :func:`run_sweep` creates or resumes the study and runs its trials, as ``lightopt sweep run`` does.
"""

from typing import TYPE_CHECKING

from lightopt._lazy import lazy_attributes

if TYPE_CHECKING:
    from lightopt.sweep.readback import best_config, find_study
    from lightopt.sweep.spec import SearchSpace, StudySpec, SweepConfigError, SweepFile, load, trial_seed
    from lightopt.sweep.study import run_sweep
    from lightopt.sweep.trial import (
        MetricNotLoggedError,
        Objective,
        PruningCallback,
        PyTorchLightningPruningCallback,
        build,
        fit,
        trial_config,
    )

# Loaded on first use: reading a study back (`lightopt sweep show`) imports neither torch nor Lightning.
_LAZY = {
    **dict.fromkeys(
        ("SearchSpace", "StudySpec", "SweepConfigError", "SweepFile", "load", "trial_seed"), "lightopt.sweep.spec"
    ),
    **dict.fromkeys(
        (
            "MetricNotLoggedError",
            "Objective",
            "PruningCallback",
            "PyTorchLightningPruningCallback",
            "build",
            "fit",
            "trial_config",
        ),
        "lightopt.sweep.trial",
    ),
    "run_sweep": "lightopt.sweep.study",
    **dict.fromkeys(("best_config", "find_study"), "lightopt.sweep.readback"),
}

__all__ = [
    "MetricNotLoggedError",
    "Objective",
    "PruningCallback",
    "PyTorchLightningPruningCallback",
    "SearchSpace",
    "StudySpec",
    "SweepConfigError",
    "SweepFile",
    "best_config",
    "build",
    "find_study",
    "fit",
    "load",
    "run_sweep",
    "trial_config",
    "trial_seed",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
