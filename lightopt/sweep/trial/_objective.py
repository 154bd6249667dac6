"""One sweep trial as Optuna calls it: seed, config from the trial's parameters, a fit, the trial's value recorded."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import traceback
import warnings
from pathlib import Path
from typing import Any

import optuna
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightopt._compat import set_user_attrs
from lightopt.runconfig import CliSpec
from lightopt.sweep.spec import TRIAL_METRICS, SweepFile, trial_seed
from lightopt.sweep.store import StorageError, trial_dir
from lightopt.sweep.trial._checkpoints import StartPoint, fallbacks
from lightopt.sweep.trial._failures import failure_reason, write_error_log
from lightopt.sweep.trial._fit import fit_trial
from lightopt.sweep.trial._hparams import trial_run
from lightopt.sweep.trial._pruning import MetricNotLoggedError, PruningCallback

__all__ = ["Objective", "TrialFailed", "has_validation_step", "is_interrupt"]


def has_validation_step(model: Any) -> bool:
    """Whether ``model``'s class (not Lightning's base, from either package) defines ``validation_step``."""
    return any(
        "validation_step" in vars(cls)
        for cls in type(model).__mro__
        if not cls.__module__.startswith(("lightning.", "pytorch_lightning."))
    )


class TrialFailed(Exception):
    """A trial that broke (an exception in user code, a NaN metric); the sweep records FAIL and goes on."""


class Objective:
    """``objective(trial) -> float`` for ``study.optimize``: fits the trial's config and returns its value.

    The value is the best (per the study's direction) of ``study.metric`` over the trial's
    validation rounds. ``trial.user_attrs`` record ``seed``, ``config`` (the full run config, which
    ``lightopt fit`` runs), ``log_dir``, ``final_value``, ``epochs``, ``global_step``,
    ``validation_rounds`` and, for a failed trial, ``fail_reason`` and ``traceback`` (also written to
    ``<log_dir>/error.txt``). A training loss that turns NaN or infinite fails the trial
    (:class:`~lightopt.sweep.trial.LossCheck`). A retry of a
    trial whose worker died (``retry_of``, ``seed`` and ``resume_from`` preset by
    :func:`~lightopt.sweep.study.enqueue_retries`) keeps the seed and resumes from the
    checkpoint, recording ``resumed_at`` (epoch and global step); when that resume fails (a
    mid-epoch checkpoint that a module cannot continue from), it starts again from the last
    end-of-epoch checkpoint, else from the start, recording ``resume_fallback`` (the checkpoint that
    failed, its error, and where it went on from). ``sys.exit()`` in the trial's code fails the trial
    like any exception. A pruned
    trial raises ``optuna.TrialPruned`` after its fit ended cleanly; a broken one raises
    :class:`TrialFailed`; a metric the module never logs raises
    :class:`~lightopt.sweep.trial.MetricNotLoggedError`, which stops the sweep.

    With several objectives (``study.metric`` a list) it returns one value per metric, all from one
    validation round: the round where the first metric was best (so a Pareto point is a state the
    model was really in), except ``trial/duration_s``, the trial's wall time from its start to the
    end of its fit. Those values are also recorded as ``objective_values``, for a pruned trial too
    (Optuna keeps no values for a pruned trial, which is never on the Pareto front).
    """

    #: The function each trial fits with; a class attribute, so a benchmark can put a stub of the fit in its place.
    fit_trial = staticmethod(fit_trial)

    def __init__(self, sweep: SweepFile, study_dir: str | Path) -> None:
        if sweep.study is None:
            raise ValueError("`sweep` must have a `study` block to run trials, but got study=None.")
        self.sweep = sweep
        self.study_dir = Path(study_dir)

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        with trial_run(trial, self.sweep, self.study_dir):  # the trial's HParams in TensorBoard, however it ends
            return self._fit(trial)

    def _fit(self, trial: optuna.Trial) -> float | list[float]:
        spec = self.sweep.study
        seed = trial.user_attrs.get("seed", trial_seed(spec.seed, trial.number))  # a retry keeps its seed
        config = self.sweep.search.suggest(trial, self.sweep.run)
        config["seed_everything"] = seed
        name = trial_dir(self.study_dir, trial.number).name
        recorded: dict[str, Any] = {"seed": seed, "config": copy.deepcopy(config)}
        if self.sweep.cli != CliSpec():  # the classes a fixed-class config needs, for `sweep reproduce NAME`
            recorded["lightning_cli"] = dataclasses.asdict(self.sweep.cli)
        recorded["log_dir"] = str(self.study_dir / name)
        set_user_attrs(trial, recorded)  # before the fit, so that a worker that dies in it leaves them; one write
        mode = "min" if spec.direction == "minimize" else "max"
        resume = trial.user_attrs.get("resume_from")
        resume = resume if resume and Path(resume).is_file() else None
        starts = [resume, *fallbacks(resume)] if resume is not None else [None]
        try:
            for index, ckpt in enumerate(starts):
                others = [m for m in spec.metrics[1:] if m not in TRIAL_METRICS]  # read from the module's logs
                pruning = PruningCallback(trial, spec.metric, spec.report_at, mode, others=others, defer_pruned=True)
                start = StartPoint()
                try:
                    with warnings.catch_warnings():  # a retry resumes another trial's checkpoint: its dirpath differs
                        warnings.filterwarnings("ignore", ".*The dirpath has changed from.*")
                        if index:  # the failed attempt reported some validation rounds already
                            warnings.filterwarnings("ignore", ".*The reported value is ignored because this `step=")
                        run = self.fit_trial(
                            config,
                            seed,
                            pruning,
                            self.study_dir,
                            name,
                            [start],
                            ckpt,
                            checkpoints=True,
                            cli=self.sweep.cli,
                        )
                    break
                except BaseException as error:
                    if ckpt is None or index + 1 == len(starts) or _passes_through(error) or is_interrupt(error):
                        raise
                    # e.g. a module whose epoch-start hooks build state that a mid-epoch checkpoint lacks
                    to = starts[index + 1]
                    trial.set_user_attr(
                        "resume_fallback", {"failed": ckpt, "error": failure_reason(error), "to": to or "start"}
                    )
            resume = ckpt
        except BaseException as error:
            if _passes_through(error) or is_interrupt(error):
                raise
            reason = failure_reason(error)
            self._fail(trial, reason, traceback.format_exc())
            raise TrialFailed(reason) from error
        trainer = run.trainer
        fitted: dict[str, Any] = {}  # written together: on a database one transaction, not one per attribute
        if resume is not None:
            fitted["resumed_at"] = {"epoch": start.epoch, "global_step": start.global_step}
        fitted["epochs"] = trainer.current_epoch
        fitted["global_step"] = trainer.global_step
        fitted["validation_rounds"] = len(pruning.history)
        if pruning.history:
            fitted["final_value"] = pruning.history[-1][1]
        if pruning.pruned is not None:  # in this write, not one of its own from the callback
            fitted["pruned_at"] = pruning.pruned
        values = None
        if pruning.failure is None and pruning.best is not None:
            fitted["best_value"] = pruning.best
            if spec.multi_objective:  # each objective at the first metric's best round, in the same write
                values = fitted["objective_values"] = self._values(trial, pruning)
        set_user_attrs(trial, fitted)
        if pruning.failure is not None:
            self._fail(trial, pruning.failure, None)
            raise TrialFailed(pruning.failure)
        if pruning.best is None:
            if not has_validation_step(run.model):
                raise MetricNotLoggedError(
                    f"{type(run.model).__name__} has no validation_step, so no validation round ran and "
                    f"`study.metric` {spec.metric!r} was never computed: add a validation_step that logs it."
                )
            reason = "no validation round ran: check the trainer's limit_val_batches and check_val_every_n_epoch"
            self._fail(trial, reason, None)
            raise TrialFailed(reason)
        if pruning.pruned is not None:
            if trial.user_attrs.get("pruned_at") != pruning.pruned:  # the callback recorded it in this process
                trial.set_user_attr("pruned_at", pruning.pruned)
            raise optuna.TrialPruned(f"pruned at step {pruning.pruned}")
        return values if spec.multi_objective else pruning.best

    def _values(self, trial: optuna.Trial, pruning: PruningCallback) -> list[float]:
        """Each objective's value: the first metric's best, the others at its round (``trial/duration_s``: now)."""
        values = []
        for metric in self.sweep.study.metrics:
            if metric == self.sweep.study.metric:
                values.append(pruning.best)
            elif metric == "trial/duration_s":
                values.append((datetime.datetime.now() - trial.datetime_start).total_seconds())
            else:
                values.append(pruning.at_best[metric])
        return values

    @staticmethod
    def _fail(trial: optuna.Trial, reason: str, trace: str | None) -> None:
        trial.set_user_attr("fail_reason", reason)
        if trace:
            trial.set_user_attr("traceback", trace[-8000:])
        write_error_log(trial.user_attrs.get("log_dir"), reason, trace)


def _passes_through(error: BaseException) -> bool:
    """Errors that are not the trial's: a metric never logged stops the sweep, a failed storage is reported."""
    return isinstance(error, (MetricNotLoggedError, StorageError))


def is_interrupt(error: BaseException) -> bool:
    """Ctrl-C or SIGTERM, as raised or as Lightning turns them into ``SystemExit`` after its own shutdown.

    A ``SystemExit`` of the user's code (``sys.exit()`` in a hook) is not one: it fails the trial.
    """
    if isinstance(error, (KeyboardInterrupt, SIGTERMException)):
        return True
    return isinstance(error, SystemExit) and isinstance(error.__context__, KeyboardInterrupt)
