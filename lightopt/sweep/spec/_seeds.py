"""The sweep's one seed scheme: every derived seed is a ``numpy.random.SeedSequence`` of the study's seed and keys.

A sweep needs many seeds from one: each trial's (``seed_everything``), each worker's sampler, the
sampler of a resumed study, the other seeds ``sweep reproduce --seeds N`` tries. All of them are
:func:`derive_seed` ``(seed, *keys)``: the first 32-bit word of ``SeedSequence([seed, *keys])``.

Why ``SeedSequence`` and not ``seed + key``: it hashes its entropy, so seeds derived from nearby
inputs give independent streams (``seed + index`` makes worker 1 of study seed 0 draw exactly what
worker 0 of study seed 1 draws, and overlapping sequences between sweeps), and it is the scheme
NumPy recommends for spawning independent generators. It is stable across NumPy versions and
platforms, so a recorded trial seed reproduces the trial.

* :func:`trial_seed` ``(study seed, trial number)``: the trial's ``seed_everything``;
* :func:`derive_seed` ``(sampler seed, worker index)``: the sampler of worker ``index`` > 0 of a
  ``--workers N`` sweep (worker 0 keeps the file's seed, so one worker draws as a plain run does);
* ``derive_seed(sampler seed, trials so far[, host, pid])``: the sampler of a resumed study
  (:func:`~lightopt.sweep.study.run_sampler_seed`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["derive_seed", "trial_seed"]


def derive_seed(seed: int, *keys: int) -> int:
    """The seed derived from ``seed`` and ``keys``: ``SeedSequence([seed, *keys])``'s first 32-bit word.

    Example:
        >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(1, 0)
        True
    """
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def trial_seed(study_seed: int, number: int) -> int:
    """The seed of trial ``number``: ``derive_seed(study_seed, number)``.

    Independent streams per trial, and the same seed for the same study seed and trial number.

    Example:
        >>> trial_seed(0, 0) == trial_seed(0, 0) != trial_seed(0, 1)
        True
    """
    return derive_seed(study_seed, number)
