"""Layer 3 of a sweep, above :mod:`~lightopt.sweep.store`: one trial, from its parameters to its value and logs.

* :class:`Objective` is what ``study.optimize`` calls: seed, config from the trial"s parameters
  (:func:`trial_config`), a fit (:func:`fit_trial`), the value recorded; a broken trial raises
  :class:`TrialFailed`;
* the fit"s callbacks: :class:`PruningCallback` (reports to Optuna from any LightningModule),
  :class:`LossCheck` (a non-finite loss fails the trial), the checkpoints a retry resumes from
  (:func:`checkpoint_callbacks`, :func:`last_checkpoint`);
* a DDP trial"s other ranks (:func:`trial_processes`, ``python -m lightopt.sweep.trial._rank``)
  and a ``--devices`` worker"s own ids (:func:`assigned_devices`);
* the learning-rate range test of §8.3.1 (:func:`range_test`, :class:`RangeTest`), which sets a
  ``{range_test: true}`` entry's bounds and runs ``lightopt tune lr``;
* the trial"s TensorBoard HParams session (:func:`trial_run`), and the memory freed after it
  (:class:`TrialCleanup`).

Loaded on first use (a ``_LAZY`` table): these modules import torch and Lightning.
"""

from typing import TYPE_CHECKING

from lightopt._lazy import lazy_attributes

if TYPE_CHECKING:
    from lightopt.sweep.trial._build import (
        Run,
        build,
        fit,
        quiet_lightning,
        torch_threads,
    )
    from lightopt.sweep.trial._checkpoints import (
        CHECKPOINT_DIR,
        EPOCH_END,
        LAST,
        StartPoint,
        checkpoint_callbacks,
        fallbacks,
        last_checkpoint,
    )
    from lightopt.sweep.trial._devices import (
        DEVICES_ENV,
        VISIBLE_ENV,
        DeviceObjective,
        assigned_devices,
        release_device,
    )
    from lightopt.sweep.trial._distributed import (
        EXIT_GRACE,
        RankFailed,
        ddp_processes,
        trial_devices,
        trial_processes,
    )
    from lightopt.sweep.trial._events import (
        is_global_zero,
        write_events,
    )
    from lightopt.sweep.trial._failures import (
        ERROR_LOG,
        LossCheck,
        NonFiniteLossError,
        failure_reason,
        is_out_of_memory,
        write_error_log,
    )
    from lightopt.sweep.trial._fit import (
        TRAINER_DEFAULTS,
        fit_trial,
        trial_config,
    )
    from lightopt.sweep.trial._hparams import (
        ATTRIBUTES,
        FIXED,
        METRICS,
        STATE_NAMES,
        STATES,
        experiment_summary,
        hparam_value,
        objective_tag,
        trial_hparams,
        trial_run,
        write_failure,
        write_trial,
    )
    from lightopt.sweep.trial._memory import (
        TrialCleanup,
        free_memory,
    )
    from lightopt.sweep.trial._objective import (
        Objective,
        TrialFailed,
        has_validation_step,
        is_interrupt,
    )
    from lightopt.sweep.trial._pruning import (
        MetricNotLoggedError,
        PruningCallback,
        PyTorchLightningPruningCallback,
    )
    from lightopt.sweep.trial._range_test import (
        DIVERGENCE,
        RangeTest,
        range_test,
        run_range_test,
        suggest_range,
        unbiased,
    )
    from lightopt.sweep.trial._rank_error import (
        ERROR_MARK,
        RANK_MODULE,
    )
    from lightopt.sweep.trial._sanity import (
        sanity_check_defaults,
        sanity_check_passed,
    )

_LAZY = {
    **dict.fromkeys(("Run", "build", "fit", "quiet_lightning", "torch_threads"), "lightopt.sweep.trial._build"),
    **dict.fromkeys(
        ("CHECKPOINT_DIR", "EPOCH_END", "LAST", "StartPoint", "checkpoint_callbacks", "fallbacks", "last_checkpoint"),
        "lightopt.sweep.trial._checkpoints",
    ),
    **dict.fromkeys(
        ("DEVICES_ENV", "DeviceObjective", "VISIBLE_ENV", "assigned_devices", "release_device"),
        "lightopt.sweep.trial._devices",
    ),
    **dict.fromkeys(
        ("EXIT_GRACE", "RankFailed", "ddp_processes", "trial_devices", "trial_processes"),
        "lightopt.sweep.trial._distributed",
    ),
    **dict.fromkeys(("is_global_zero", "write_events"), "lightopt.sweep.trial._events"),
    **dict.fromkeys(
        ("ERROR_LOG", "LossCheck", "NonFiniteLossError", "failure_reason", "is_out_of_memory", "write_error_log"),
        "lightopt.sweep.trial._failures",
    ),
    **dict.fromkeys(("TRAINER_DEFAULTS", "fit_trial", "trial_config"), "lightopt.sweep.trial._fit"),
    **dict.fromkeys(
        (
            "ATTRIBUTES",
            "FIXED",
            "METRICS",
            "STATES",
            "STATE_NAMES",
            "experiment_summary",
            "hparam_value",
            "objective_tag",
            "trial_hparams",
            "trial_run",
            "write_failure",
            "write_trial",
        ),
        "lightopt.sweep.trial._hparams",
    ),
    **dict.fromkeys(("TrialCleanup", "free_memory"), "lightopt.sweep.trial._memory"),
    **dict.fromkeys(
        ("Objective", "TrialFailed", "has_validation_step", "is_interrupt"), "lightopt.sweep.trial._objective"
    ),
    **dict.fromkeys(
        ("MetricNotLoggedError", "PruningCallback", "PyTorchLightningPruningCallback"), "lightopt.sweep.trial._pruning"
    ),
    **dict.fromkeys(
        ("DIVERGENCE", "RangeTest", "range_test", "run_range_test", "suggest_range", "unbiased"),
        "lightopt.sweep.trial._range_test",
    ),
    **dict.fromkeys(("ERROR_MARK", "RANK_MODULE"), "lightopt.sweep.trial._rank_error"),
    **dict.fromkeys(("sanity_check_defaults", "sanity_check_passed"), "lightopt.sweep.trial._sanity"),
}

__all__ = [
    "ATTRIBUTES",
    "CHECKPOINT_DIR",
    "DEVICES_ENV",
    "DIVERGENCE",
    "EPOCH_END",
    "ERROR_LOG",
    "ERROR_MARK",
    "EXIT_GRACE",
    "FIXED",
    "LAST",
    "METRICS",
    "RANK_MODULE",
    "STATES",
    "STATE_NAMES",
    "TRAINER_DEFAULTS",
    "VISIBLE_ENV",
    "DeviceObjective",
    "LossCheck",
    "MetricNotLoggedError",
    "NonFiniteLossError",
    "Objective",
    "PruningCallback",
    "PyTorchLightningPruningCallback",
    "RangeTest",
    "RankFailed",
    "Run",
    "StartPoint",
    "TrialCleanup",
    "TrialFailed",
    "assigned_devices",
    "build",
    "checkpoint_callbacks",
    "ddp_processes",
    "experiment_summary",
    "failure_reason",
    "fallbacks",
    "fit",
    "fit_trial",
    "free_memory",
    "has_validation_step",
    "hparam_value",
    "is_interrupt",
    "is_global_zero",
    "is_out_of_memory",
    "last_checkpoint",
    "objective_tag",
    "quiet_lightning",
    "range_test",
    "release_device",
    "run_range_test",
    "sanity_check_defaults",
    "sanity_check_passed",
    "suggest_range",
    "unbiased",
    "torch_threads",
    "trial_config",
    "trial_devices",
    "trial_hparams",
    "trial_processes",
    "trial_run",
    "write_error_log",
    "write_events",
    "write_failure",
    "write_trial",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
