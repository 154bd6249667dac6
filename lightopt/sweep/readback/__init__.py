"""Layer 5 of a sweep, the top: a stored study read back.

* :func:`find_study` finds it from a sweep file or a study name (:class:`NotRunYet` before its first run);
* ``sweep show``: :func:`format_table`, :func:`study_json`, :func:`trial_value`;
* ``sweep best``: :func:`best_config`, :func:`trial_run_config`, :func:`dump_config`;
* ``sweep best --seeds N``: :func:`recommend_by_seeds` (a :class:`SeedRecommendation` of
  :class:`SeedCandidate`, chosen by :func:`best_by_mean`), :func:`recorded_seed_runs` (the study
  attribute :data:`SEED_RUNS_ATTR`), :func:`seed_runs_note`;
* ``sweep reproduce``: :func:`reproduce_trial` (a :class:`Reproduction`), through a :class:`TrialRerun`
  (:func:`prepare_rerun`), which ``sweep best --seeds`` trains with too;
* ``lightopt tensorboard``: :func:`add_parser`, :func:`serve`.

Loaded on first use (a ``_LAZY`` table): ``sweep show NAME`` imports neither torch nor Lightning.
"""

from typing import TYPE_CHECKING

from lightopt._lazy import lazy_attributes

if TYPE_CHECKING:
    from lightopt.sweep.readback._export import (
        best_config,
        dump_config,
        trial_run_config,
    )
    from lightopt.sweep.readback._find import (
        NotRunYet,
        find_study,
    )
    from lightopt.sweep.readback._reproduce import (
        Reproduction,
        TrialRerun,
        prepare_rerun,
        reproduce_trial,
    )
    from lightopt.sweep.readback._seed_runs import (
        SEED_RUNS_ATTR,
        SeedCandidate,
        SeedRecommendation,
        best_by_mean,
        recommend_by_seeds,
        recorded_seed_runs,
        seed_runs_note,
    )
    from lightopt.sweep.readback._show import (
        format_table,
        study_json,
        trial_rows,
        trial_value,
    )
    from lightopt.sweep.readback._tensorboard_cli import (
        add_parser,
        serve,
    )

_LAZY = {
    **dict.fromkeys(("best_config", "dump_config", "trial_run_config"), "lightopt.sweep.readback._export"),
    **dict.fromkeys(("NotRunYet", "find_study"), "lightopt.sweep.readback._find"),
    **dict.fromkeys(
        ("Reproduction", "TrialRerun", "prepare_rerun", "reproduce_trial"), "lightopt.sweep.readback._reproduce"
    ),
    **dict.fromkeys(
        (
            "SEED_RUNS_ATTR",
            "SeedCandidate",
            "SeedRecommendation",
            "best_by_mean",
            "recommend_by_seeds",
            "recorded_seed_runs",
            "seed_runs_note",
        ),
        "lightopt.sweep.readback._seed_runs",
    ),
    **dict.fromkeys(("format_table", "study_json", "trial_rows", "trial_value"), "lightopt.sweep.readback._show"),
    **dict.fromkeys(("add_parser", "serve"), "lightopt.sweep.readback._tensorboard_cli"),
}

__all__ = [
    "SEED_RUNS_ATTR",
    "NotRunYet",
    "Reproduction",
    "SeedCandidate",
    "SeedRecommendation",
    "TrialRerun",
    "add_parser",
    "best_by_mean",
    "best_config",
    "dump_config",
    "find_study",
    "format_table",
    "prepare_rerun",
    "recommend_by_seeds",
    "recorded_seed_runs",
    "reproduce_trial",
    "seed_runs_note",
    "serve",
    "study_json",
    "trial_rows",
    "trial_value",
    "trial_run_config",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
