"""Layer 4 of a sweep, above :mod:`~lightopt.sweep.trial`: a study run to its end, by one worker or many.

* :func:`run_sweep` (``lightopt sweep run``) opens the study (:func:`open_study`), runs the trial
  loop here (:func:`run_worker`) or in worker processes (:func:`run_workers`), prints a
  :class:`Progress` line per trial and the :func:`summary`;
* crash handling: :func:`fail_dead_trials`, :func:`enqueue_retries`; the early stop of a sweep
  whose first trials all fail alike (:class:`FailureWatch`);
* warm starts, once before the first trial: :func:`warm_start` copies another study's trials,
  :func:`enqueue_settings` enqueues ``study.enqueue``;
* a ``{range_test: true}`` entry's bounds (:func:`settle_range_test`);
* ``--devices``: :func:`plan` shares the ids out between the workers;
* the study"s TensorBoard run (:class:`StudyRun`, over :class:`StudyHistory`) and Optuna"s plots
  (:func:`plot_study`, :func:`draw_plots`), drawn in a process of their own (:class:`Drawing`) and
  at the end by the last sweep of the study on the machine (:func:`sweeping`).

Loaded on first use (a ``_LAZY`` table).
"""

from typing import TYPE_CHECKING

from lightopt._lazy import lazy_attributes

if TYPE_CHECKING:
    from lightopt.sweep.study._board import (
        DRAW_SHARE,
        StudyRun,
        draw_plots,
        sweeping,
    )
    from lightopt.sweep.study._devices import (
        DeviceSlots,
        parse_devices,
        plan,
    )
    from lightopt.sweep.study._drawing import (
        Drawing,
        DrawingResult,
    )
    from lightopt.sweep.study._history import (
        StudyHistory,
        restart_event,
    )
    from lightopt.sweep.study._loop import (
        Interrupt,
        run_worker,
    )
    from lightopt.sweep.study._open import (
        open_study,
        run_sampler_seed,
    )
    from lightopt.sweep.study._plots import (
        plot_study,
    )
    from lightopt.sweep.study._prestart import (
        PRESTART_ENV,
        Prestarted,
        close_prestarted,
        prestart_workers,
        user_modules,
    )
    from lightopt.sweep.study._progress import (
        Progress,
    )
    from lightopt.sweep.study._range_bounds import (
        RANGE_TEST_PNG,
        settle_range_test,
    )
    from lightopt.sweep.study._recovery import (
        enqueue_retries,
        fail_dead_trials,
    )
    from lightopt.sweep.study._runner import (
        SweepResult,
        run_sweep,
    )
    from lightopt.sweep.study._stop_rule import (
        FailureWatch,
        failure_signature,
    )
    from lightopt.sweep.study._summary import (
        summary,
    )
    from lightopt.sweep.study._warm import (
        copyable,
        enqueue_settings,
        find_source,
        warm_start,
    )
    from lightopt.sweep.study._workers import (
        GRACE_S,
        run_workers,
    )

_LAZY = {
    **dict.fromkeys(("DRAW_SHARE", "StudyRun", "draw_plots", "sweeping"), "lightopt.sweep.study._board"),
    **dict.fromkeys(("Drawing", "DrawingResult"), "lightopt.sweep.study._drawing"),
    **dict.fromkeys(("DeviceSlots", "parse_devices", "plan"), "lightopt.sweep.study._devices"),
    **dict.fromkeys(("StudyHistory", "restart_event"), "lightopt.sweep.study._history"),
    **dict.fromkeys(("Interrupt", "run_worker"), "lightopt.sweep.study._loop"),
    **dict.fromkeys(("open_study", "run_sampler_seed"), "lightopt.sweep.study._open"),
    **dict.fromkeys(("plot_study",), "lightopt.sweep.study._plots"),
    **dict.fromkeys(
        ("PRESTART_ENV", "Prestarted", "close_prestarted", "prestart_workers", "user_modules"),
        "lightopt.sweep.study._prestart",
    ),
    **dict.fromkeys(("Progress",), "lightopt.sweep.study._progress"),
    **dict.fromkeys(("RANGE_TEST_PNG", "settle_range_test"), "lightopt.sweep.study._range_bounds"),
    **dict.fromkeys(("enqueue_retries", "fail_dead_trials"), "lightopt.sweep.study._recovery"),
    **dict.fromkeys(("SweepResult", "run_sweep"), "lightopt.sweep.study._runner"),
    **dict.fromkeys(("FailureWatch", "failure_signature"), "lightopt.sweep.study._stop_rule"),
    **dict.fromkeys(("summary",), "lightopt.sweep.study._summary"),
    **dict.fromkeys(("copyable", "enqueue_settings", "find_source", "warm_start"), "lightopt.sweep.study._warm"),
    **dict.fromkeys(("GRACE_S", "run_workers"), "lightopt.sweep.study._workers"),
}

__all__ = [
    "DRAW_SHARE",
    "GRACE_S",
    "DeviceSlots",
    "Drawing",
    "DrawingResult",
    "FailureWatch",
    "Interrupt",
    "PRESTART_ENV",
    "Prestarted",
    "RANGE_TEST_PNG",
    "Progress",
    "StudyHistory",
    "StudyRun",
    "SweepResult",
    "copyable",
    "draw_plots",
    "enqueue_retries",
    "enqueue_settings",
    "fail_dead_trials",
    "close_prestarted",
    "failure_signature",
    "find_source",
    "open_study",
    "parse_devices",
    "plan",
    "plot_study",
    "prestart_workers",
    "restart_event",
    "run_sampler_seed",
    "run_sweep",
    "run_worker",
    "run_workers",
    "settle_range_test",
    "summary",
    "sweeping",
    "user_modules",
    "warm_start",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
