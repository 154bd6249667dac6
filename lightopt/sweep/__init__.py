"""Optuna sweeps from files: a LightningCLI run config (:mod:`lightopt.runconfig`) plus ``study`` and ``search`` blocks.

* :func:`load` reads and checks a file, with its ``--config`` bases, into a :class:`SweepFile` (errors:
  :class:`SweepConfigError`, the same class as :class:`lightopt.runconfig.ConfigError`);
* :class:`SearchSpace` turns ``search`` into ``trial.suggest_*`` calls and back (:func:`trial_config`);
* :func:`build` / :func:`fit` run a config through LightningCLI, as ``lightopt fit`` does;
* :class:`PruningCallback` reports to Optuna from any LightningModule;
* :func:`run_sweep` creates or resumes the study and runs its trials, as ``lightopt sweep run`` does.
"""

import importlib
from typing import Any

# Loaded on first use: reading a study back (`lightopt sweep show`) imports neither torch nor Lightning.
_LAZY = {
    **dict.fromkeys(("build", "fit"), "lightopt.sweep.build"),
    **dict.fromkeys(("StudySpec", "SweepConfigError", "SweepFile", "load"), "lightopt.sweep.config"),
    **dict.fromkeys(("Objective", "trial_config", "trial_seed"), "lightopt.sweep.objective"),
    **dict.fromkeys(("MetricNotLoggedError", "PruningCallback", "PyTorchLightningPruningCallback"),
                    "lightopt.sweep.pruning"),
    **dict.fromkeys(("best_config", "find_study"), "lightopt.sweep.report"),
    "run_sweep": "lightopt.sweep.runner",
    "SearchSpace": "lightopt.sweep.space",
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


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lightopt.sweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
