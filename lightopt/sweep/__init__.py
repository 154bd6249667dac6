"""Optuna sweeps from files: a LightningCLI run config (:mod:`lightopt.runconfig`) plus ``study`` and ``search`` blocks.

* :func:`load` reads and checks a file, with its ``--config`` bases, into a :class:`SweepFile` (errors:
  :class:`SweepConfigError`, the same class as :class:`lightopt.runconfig.ConfigError`);
* :class:`SearchSpace` turns ``search`` into ``trial.suggest_*`` calls and back (:func:`trial_config`);
* :func:`build` / :func:`fit` run a config through LightningCLI, as ``lightopt fit`` does;
* :class:`PruningCallback` reports to Optuna from any LightningModule;
* :func:`run_sweep` creates or resumes the study and runs its trials, as ``lightopt sweep run`` does.
"""

from lightopt.sweep.build import build, fit
from lightopt.sweep.config import StudySpec, SweepConfigError, SweepFile, load
from lightopt.sweep.objective import Objective, trial_config, trial_seed
from lightopt.sweep.pruning import MetricNotLoggedError, PruningCallback, PyTorchLightningPruningCallback
from lightopt.sweep.report import best_config, find_study
from lightopt.sweep.runner import run_sweep
from lightopt.sweep.space import SearchSpace

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
