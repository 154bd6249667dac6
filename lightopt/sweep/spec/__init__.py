"""Layer 1 of a sweep, the lowest: the sweep file as checked values, before anything is run or stored.

* :func:`load` reads a sweep or run file with its ``--config`` bases into a :class:`SweepFile`
  (through :mod:`lightopt.runconfig`); errors are :class:`SweepConfigError`;
* :class:`StudySpec` is the ``study`` block (:func:`parse_study`, and the checks the command line's
  flags share: :func:`check_threads`, :func:`check_timeout`, :func:`check_n_trials`);
* :class:`SearchSpace` is the ``search`` block: ``trial.suggest_*`` calls and back;
* the search coordinates of Chapter 8 (:func:`momentum_from_horizon`, :func:`lr_from_effective`,
  :func:`scale_lr_with_batch`, :func:`config_values`, and the inverses :func:`horizon_from_momentum`,
  :func:`effective_from_lr`);
* warm starts: ``study.enqueue`` as :class:`Enqueued` trial params (:func:`parse_enqueue`),
  ``study.warm_start`` as a :class:`WarmStart`;
* the learning rate a range test ramps (:func:`lr_entry`) and the bounds a study recorded
  (:func:`recorded_range_test`, :func:`with_recorded_bounds`);
* :func:`check_resume`: whether a stored study can be resumed with this file;
* the one seed scheme (:func:`derive_seed`, :func:`trial_seed`).

Loaded on first use (a ``_LAZY`` table): reading a study back imports only what it names.
"""

from typing import TYPE_CHECKING

from lightopt._lazy import lazy_attributes

if TYPE_CHECKING:
    from lightopt.sweep.spec._coordinates import (
        RAW,
        Coordinate,
        config_values,
        effective_from_lr,
        horizon_from_momentum,
        lr_from_effective,
        momentum_from_horizon,
        parse_coordinate,
        scale_lr_with_batch,
    )
    from lightopt.sweep.spec._file import SweepConfigError, SweepFile, load, parse
    from lightopt.sweep.spec._lr_entry import LrEntry, lr_entry, recorded_range_test, with_recorded_bounds
    from lightopt.sweep.spec._resume import check_resume, describe_space, failed_only_clashes
    from lightopt.sweep.spec._seeds import derive_seed, trial_seed
    from lightopt.sweep.spec._space import Param, SearchSpace, parse_search
    from lightopt.sweep.spec._study import (
        PRUNERS,
        RETRIES,
        SAMPLERS,
        STOP_AFTER_SAME_FAILURES,
        STUDY_NAME,
        TRIAL_METRICS,
        StudySpec,
        check_n_trials,
        check_retries,
        check_stop_after,
        check_threads,
        check_timeout,
        parse_study,
    )
    from lightopt.sweep.spec._warm import Enqueued, WarmStart, parse_enqueue, parse_warm_start

_LAZY = {
    **dict.fromkeys(
        (
            "RAW",
            "Coordinate",
            "config_values",
            "effective_from_lr",
            "horizon_from_momentum",
            "lr_from_effective",
            "momentum_from_horizon",
            "parse_coordinate",
            "scale_lr_with_batch",
        ),
        "lightopt.sweep.spec._coordinates",
    ),
    **dict.fromkeys(("SweepConfigError", "SweepFile", "load", "parse"), "lightopt.sweep.spec._file"),
    **dict.fromkeys(
        ("LrEntry", "lr_entry", "recorded_range_test", "with_recorded_bounds"), "lightopt.sweep.spec._lr_entry"
    ),
    **dict.fromkeys(("check_resume", "describe_space", "failed_only_clashes"), "lightopt.sweep.spec._resume"),
    **dict.fromkeys(("derive_seed", "trial_seed"), "lightopt.sweep.spec._seeds"),
    **dict.fromkeys(("Param", "SearchSpace", "parse_search"), "lightopt.sweep.spec._space"),
    **dict.fromkeys(
        (
            "PRUNERS",
            "RETRIES",
            "SAMPLERS",
            "STOP_AFTER_SAME_FAILURES",
            "STUDY_NAME",
            "TRIAL_METRICS",
            "StudySpec",
            "check_n_trials",
            "check_retries",
            "check_stop_after",
            "check_threads",
            "check_timeout",
            "parse_study",
        ),
        "lightopt.sweep.spec._study",
    ),
    **dict.fromkeys(("Enqueued", "WarmStart", "parse_enqueue", "parse_warm_start"), "lightopt.sweep.spec._warm"),
}

__all__ = [
    "PRUNERS",
    "RAW",
    "RETRIES",
    "SAMPLERS",
    "STOP_AFTER_SAME_FAILURES",
    "STUDY_NAME",
    "TRIAL_METRICS",
    "Coordinate",
    "Enqueued",
    "LrEntry",
    "Param",
    "SearchSpace",
    "StudySpec",
    "SweepConfigError",
    "SweepFile",
    "WarmStart",
    "check_n_trials",
    "check_resume",
    "check_retries",
    "check_stop_after",
    "check_threads",
    "check_timeout",
    "config_values",
    "derive_seed",
    "describe_space",
    "effective_from_lr",
    "failed_only_clashes",
    "horizon_from_momentum",
    "load",
    "lr_entry",
    "lr_from_effective",
    "momentum_from_horizon",
    "parse",
    "parse_coordinate",
    "parse_enqueue",
    "parse_search",
    "parse_study",
    "parse_warm_start",
    "recorded_range_test",
    "scale_lr_with_batch",
    "trial_seed",
    "with_recorded_bounds",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
