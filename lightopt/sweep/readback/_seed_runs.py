"""``lightopt sweep best --seeds N``: the top trials trained again with other seeds, the best mean recommended.

A sweep's best trial is the best of many noisy values, so it is often a good setting with a lucky
seed. Here each of the top ``K`` COMPLETE trials (by the study's one rule, :func:`top_trials`) is
trained again with ``N`` other seeds, the seeds ``sweep reproduce --seeds N`` uses
(``trial_seed(recorded seed, i)``, i = 1..N), through the same :class:`TrialRerun`; each run is scored
as a trial is (the metric's best over the validation rounds), the trial's own value counts as the run
of its own seed, and the setting with the best mean over its ``N + 1`` runs is recommended.

Every finished run is recorded in the study, through its storage, as the study user attribute
``seed_runs`` (``{trial number: {seed: value}}``, both keys strings as JSON wants): another run of the
command, on this machine or another sharing the storage, reuses them and trains only the missing
ones, and an interrupted command keeps what it finished. Differs from a trial user attribute, which
Optuna refuses to change once a trial has finished. A run that fails (a non-finite metric, an error)
is shown, not recorded, so the next command tries it again.
"""

from __future__ import annotations

import math
import shutil
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lightopt.runconfig import ConfigError as SweepConfigError
from lightopt.sweep.readback._reproduce import prepare_rerun
from lightopt.sweep.store import TRIAL_DIR, best_trial, is_better, is_minimize, top_trials

if TYPE_CHECKING:  # the spec's file module imports torch: imported when a trial is run again
    from lightopt.sweep.spec import SweepFile

__all__ = [
    "SEED_RUNS_ATTR",
    "SeedCandidate",
    "SeedRecommendation",
    "best_by_mean",
    "recommend_by_seeds",
    "recorded_seed_runs",
    "seed_runs_note",
]

#: The study user attribute holding the recorded runs: ``{str(trial number): {str(seed): value}}``.
SEED_RUNS_ATTR = "seed_runs"


def recorded_seed_runs(study: optuna.Study) -> dict[int, dict[int, float]]:
    """The study's recorded runs with other seeds: ``{trial number: {seed: value}}`` (empty when none)."""
    stored = study.user_attrs.get(SEED_RUNS_ATTR) or {}
    return {int(number): {int(seed): float(value) for seed, value in runs.items()} for number, runs in stored.items()}


def _record(study: optuna.Study, number: int, seed: int, value: float) -> None:
    """Add one run to :data:`SEED_RUNS_ATTR`, read again just before the write so another command's runs stay."""
    stored = study.user_attrs.get(SEED_RUNS_ATTR) or {}
    stored.setdefault(str(number), {})[str(seed)] = value
    study.set_user_attr(SEED_RUNS_ATTR, stored)


@dataclass(frozen=True)
class SeedCandidate:
    """One of the top trials: its runs, ``(seed, value)``, its own seed and value first, and the runs that failed."""

    trial: FrozenTrial
    runs: tuple[tuple[int, float], ...]
    failed: tuple[tuple[int, str], ...] = ()

    @property
    def value(self) -> float:
        """The trial's own value (the run of its own seed)."""
        return float(self.trial.value)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def mean(self) -> float:
        return statistics.fmean(value for _, value in self.runs)

    @property
    def std(self) -> float:
        """The sample standard deviation over the runs (NaN with one run)."""
        return statistics.stdev(value for _, value in self.runs) if self.n > 1 else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.trial.number,
            "value": self.value,
            "mean": self.mean,
            "std": None if math.isnan(self.std) else self.std,
            "n_runs": self.n,
            "runs": {str(seed): value for seed, value in self.runs},
            "failed": {str(seed): reason for seed, reason in self.failed},
            "params": self.trial.params,
        }


def best_by_mean(candidates: Sequence[SeedCandidate], minimize: bool) -> SeedCandidate:
    """The candidate ``sweep best --seeds`` recommends: fewest failed runs, then best mean, then lower number.

    The means are compared with :func:`~lightopt.sweep.store.is_better` in the study's direction.
    """
    best = candidates[0]
    for candidate in candidates[1:]:
        if len(candidate.failed) != len(best.failed):
            best = candidate if len(candidate.failed) < len(best.failed) else best
        elif is_better(candidate.mean, best.mean, minimize) or (
            candidate.mean == best.mean and candidate.trial.number < best.trial.number
        ):
            best = candidate
    return best


@dataclass(frozen=True)
class SeedRecommendation:
    """What ``sweep best --seeds N`` did: the candidates (best value first), the one recommended, the runs."""

    study_name: str
    metric: str
    minimize: bool
    seeds: int
    candidates: tuple[SeedCandidate, ...]
    recommended: SeedCandidate
    trained: int
    reused: int
    log_dir: Path
    notes: tuple[str, ...] = ()

    @property
    def best(self) -> SeedCandidate:
        """The single best trial by value (the first candidate)."""
        return self.candidates[0]

    def verdict(self) -> str:
        """One line: the recommended trial and its mean, and the single best trial's mean when it differs."""
        chosen, best = self.recommended, self.best
        line = f"recommended: trial {chosen.trial.number} (mean {chosen.mean:.6g} over {chosen.n} runs)"
        if chosen is best:
            return line + ", also the single best trial"
        return line + f"; the single best trial {best.trial.number} has mean {best.mean:.6g} over {best.n} runs"

    def summary(self) -> str:
        """The table of the candidates, the verdict, the failed runs and where the logs are (the notes are reported
        before the training)."""
        lines = [
            f"study {self.study_name!r}: the top {len(self.candidates)} trial(s) by {self.metric}, each trained with "
            f"its own seed and {self.seeds} other(s) ({self.trained} run(s) trained now, {self.reused} reused "
            f"from earlier `--seeds` runs)",
            f"{'trial':>7}  {'value':>12}  {'mean':>12} ± {'std':<10}  {'runs':>4}",
        ]
        for candidate in self.candidates:
            std = "-" if math.isnan(candidate.std) else f"{candidate.std:.4g}"
            failed = f"  ({len(candidate.failed)} failed)" if candidate.failed else ""
            lines.append(
                f"{candidate.trial.number:>7}  {candidate.value:>12.6g}  {candidate.mean:>12.6g} ± {std:<10}  "
                f"{candidate.n:>4}{failed}"
            )
        lines.append(self.verdict())
        for candidate in self.candidates:
            lines += [f"  trial {candidate.trial.number}, seed {seed} failed: {why}" for seed, why in candidate.failed]
        lines.append(f"logs: {self.log_dir}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study_name,
            "metric": self.metric,
            "direction": "minimize" if self.minimize else "maximize",
            "seeds": self.seeds,
            "candidates": [candidate.as_dict() for candidate in self.candidates],
            "recommended": self.recommended.trial.number,
            "best": self.best.trial.number,
            "trained": self.trained,
            "reused": self.reused,
            "log_dir": str(self.log_dir),
            "notes": list(self.notes),
        }


def recommend_by_seeds(
    study: optuna.Study,
    seeds: int,
    top: int = 3,
    sweep: SweepFile | None = None,
    *,
    log_dir: str = "runs",
    threads: int | None = None,
    report: Callable[[str], None] = lambda line: None,
) -> SeedRecommendation:
    """Train the ``top`` best COMPLETE trials with ``seeds`` other seeds each and recommend the best mean.

    Runs already recorded in the study are reused; each new one is recorded as soon as it finishes.
    Logs go to ``<log_dir>/<study>-seeds/trial_NNNN_seed_S``, beside the study's folder, never among
    its trials (a folder an interrupted run left is replaced). The config, metric and threads are
    :func:`~lightopt.sweep.readback.reproduce_trial`'s: the sweep file's with the trial's params, else
    the trial's recorded config. ``report`` gets the notes on the configs, then one line per run.

    Raises :class:`SweepConfigError` for ``seeds`` < 1, ``top`` < 1, a study without a COMPLETE trial or a
    candidate that cannot be run again (checked before any training), and ``KeyboardInterrupt``, saying
    how many runs were recorded, when interrupted.
    """
    from lightopt.sweep.spec import trial_seed

    if seeds < 1:
        raise SweepConfigError(f"`--seeds` must be >= 1 to train other seeds, but got seeds={seeds}.")
    if top < 1:
        raise SweepConfigError(f"`--top` must be >= 1, but got top={top}.")
    trials = top_trials(study, top)
    if not trials:
        raise SweepConfigError(
            f"study {study.study_name!r} has no completed trial yet, so there is nothing to train with other "
            f"seeds; `lightopt sweep show` lists its trials."
        )
    reruns = [prepare_rerun(study, trial.number, sweep, log_dir=log_dir, threads=threads) for trial in trials]
    directory = reruns[0].study_dir.parent / f"{reruns[0].study_dir.name}-seeds"
    recorded = recorded_seed_runs(study)
    planned = {
        rerun.trial.number: [trial_seed(rerun.trial.user_attrs["seed"], i) for i in range(1, seeds + 1)]
        for rerun in reruns
    }
    missing = sum(seed not in recorded.get(number, {}) for number, others in planned.items() for seed in others)
    reused, trained, done = len(reruns) * seeds - missing, 0, 0
    notes = tuple(f"trial {rerun.trial.number}: {note}" for rerun in reruns for note in rerun.notes)
    for note in notes:  # before the training, which they are about
        report(f"note: {note}")
    candidates = []
    try:
        for rerun in reruns:
            number = rerun.trial.number
            runs = [(int(rerun.trial.user_attrs["seed"]), float(rerun.trial.value))]
            failed = []
            for seed in planned[number]:
                if seed in recorded.get(number, {}):
                    runs.append((seed, recorded[number][seed]))
                    continue
                name = f"{TRIAL_DIR.format(number=number)}_seed_{seed}"
                shutil.rmtree(directory / name, ignore_errors=True)  # left by an interrupted run: not recorded
                done += 1
                try:  # another seed may diverge where the trial's did not: that is a result, not an error
                    value = rerun.run(seed, directory, name)
                except Exception as error:
                    why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    failed.append((seed, why))
                    report(f"[{done}/{missing}] trial {number}, seed {seed}: failed: {why}")
                    continue
                _record(study, number, seed, value)
                trained += 1
                runs.append((seed, value))
                report(f"[{done}/{missing}] trial {number}, seed {seed}: {rerun.metric}={value:.6g}")
            candidates.append(SeedCandidate(rerun.trial, tuple(runs), tuple(failed)))
    except KeyboardInterrupt:  # TrialRerun.run turns Lightning's exit after Ctrl-C or SIGTERM into this
        raise KeyboardInterrupt(
            f"{trained} of {missing} seed run(s) finished and are recorded in the study; the same command "
            f"again trains only the rest"
        ) from None
    minimize = reruns[0].minimize
    return SeedRecommendation(
        study.study_name,
        reruns[0].metric,
        minimize,
        seeds,
        tuple(candidates),
        best_by_mean(candidates, minimize),
        trained,
        reused,
        directory,
        notes,
    )


def seed_runs_note(study: optuna.Study, command: str) -> str | None:
    """For ``sweep best`` without ``--seeds``: what the recorded seed runs say, in one line (None: none recorded).

    ``command`` is the command that trains or reuses them (``lightopt sweep best FILE --seeds N``,
    N the most runs recorded for one trial). Imports no torch.
    """
    recorded = recorded_seed_runs(study)
    complete = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    candidates = [
        SeedCandidate(trial, ((int(trial.user_attrs.get("seed", -1)), float(trial.value)), *runs.items()))
        for number, runs in sorted(recorded.items())
        if (trial := complete.get(number)) is not None and trial.value is not None and runs
    ]
    best = best_trial(study)
    if not candidates or best is None:
        return None
    seeds = max(len(runs) for runs in recorded.values())
    how = f"{command} --seeds {seeds}"
    chosen = best_by_mean(candidates, is_minimize(study))
    by_number = {candidate.trial.number: candidate for candidate in candidates}
    if best.number not in by_number:
        listed = ", ".join(str(number) for number in by_number)
        return (
            f"seed runs are recorded for trial(s) {listed} (the best mean: trial {chosen.trial.number}, "
            f"{chosen.mean:.6g} over {chosen.n} runs), not for trial {best.number}, the best now; `{how}` trains them"
        )
    if chosen.trial.number == best.number:
        return f"trial {best.number} is also the best by mean over {chosen.n} runs (`{how}`)"
    single = by_number[best.number]
    return (
        f"trial {chosen.trial.number} is the best by mean over {chosen.n} runs ({chosen.mean:.6g}; trial "
        f"{best.number} has {single.mean:.6g} over {single.n}); `{how} --export PATH` exports it"
    )
