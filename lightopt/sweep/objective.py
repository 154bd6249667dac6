"""One sweep trial: seed, config from the trial's parameters, a Lightning fit, the trial's value."""

from __future__ import annotations

import copy
import dataclasses
import traceback
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightopt.sweep import recovery
from lightopt.sweep._sanity import sanity_check_defaults, sanity_check_passed
from lightopt.sweep._trial_curves import trial_curves
from lightopt.runconfig import CliSpec
from lightopt.sweep.build import Run, build, quiet_lightning
from lightopt.sweep.config import SweepFile
from lightopt.sweep.distributed import trial_processes
from lightopt.sweep.failures import LossCheck, failure_reason, write_error_log
from lightopt.sweep.pruning import MetricNotLoggedError, PruningCallback
from lightopt.sweep.storage import StorageError
from lightopt.tensorboard import trial_run

__all__ = ["Objective", "TrialFailed", "fit_trial", "trial_seed", "trial_config", "TRAINER_DEFAULTS"]

# Sweeps run many short fits: no progress bar or summary per trial (the runner prints one line each).
TRAINER_DEFAULTS = {"enable_progress_bar": False, "enable_model_summary": False}


def has_validation_step(model: Any) -> bool:
    """Whether ``model``'s class (not Lightning's base, from either package) defines ``validation_step``."""
    return any("validation_step" in vars(cls) for cls in type(model).__mro__
               if not cls.__module__.startswith(("lightning.", "pytorch_lightning.")))


class TrialFailed(Exception):
    """A trial that broke (an exception in user code, a NaN metric); the sweep records FAIL and goes on."""


def trial_seed(study_seed: int, number: int) -> int:
    """The seed of trial ``number``: ``SeedSequence([study_seed, number])``'s first 32-bit word.

    Independent streams per trial, and the same seed for the same study seed and trial number.

    Example:
        >>> trial_seed(0, 0) == trial_seed(0, 0) != trial_seed(0, 1)
        True
    """
    return int(np.random.SeedSequence([study_seed, number]).generate_state(1)[0])


def trial_config(sweep: SweepFile, params: Mapping[str, Any], seed: int | None = None) -> dict[str, Any]:
    """The run config of a trial with ``params`` (dotted keys): the file's config with them set.

    With ``seed`` it also sets ``seed_everything``, so ``lightopt fit`` of the result reruns the trial.
    """
    config = sweep.search.apply(sweep.run, params)
    if seed is not None:
        config["seed_everything"] = seed
    return config


def fit_trial(config: Mapping[str, Any], seed: int, pruning: PruningCallback, directory: Path, name: str,
              callbacks: Sequence[Callback] = (), ckpt_path: str | None = None, checkpoints: bool = False,
              cli: CliSpec = CliSpec()) -> Run:
    """Fit one trial's ``config`` as a sweep does; logs in ``directory / name``; returns the fitted :class:`Run`.

    ``pruning`` watches the metric (its ``best`` is the trial's value); the Trainer gets the sweep's
    defaults (no progress bar or summary; the config's values, an explicit null included, win) and a
    TensorBoard logger in ``directory / name``, first and beside the config's own loggers, unless the
    config sets ``logger: false``. ``cli`` says which LightningCLI builds the config.
    ``callbacks`` are added to the Trainer's; ``checkpoints`` adds a ``ModelCheckpoint`` whose
    ``last.ckpt`` a retried trial resumes from (:func:`~lightopt.sweep.recovery.checkpoint_callbacks`);
    ``ckpt_path`` resumes the fit from a checkpoint. Lightning's sanity check runs in the first trial
    of a ``directory`` in this process, not in later ones (unless the config sets
    ``num_sanity_val_steps``); Lightning isolates its random state, so a trial's result is the same
    either way. ``lightopt sweep reproduce`` runs a recorded trial again through this same function.
    A config with ``trainer.strategy: ddp`` runs here as rank 0, its other ranks started by
    :func:`~lightopt.sweep.distributed.trial_processes` with the same sanity-check, checkpoint and
    resume settings, so all ranks run the same collectives.
    """
    overrides: dict[str, Any] = {"default_root_dir": str(Path(directory) / name)}
    # name="" and version=name: the logs land in exactly <directory>/<name>.
    logger = TensorBoardLogger(directory, name="", version=name, default_hp_metric=False)
    key = str(Path(directory).resolve())
    sanity = sanity_check_defaults(key)
    job = {"config": config, "seed": seed, "directory": str(directory), "name": name, "monitor": pruning.monitor,
           "report_at": pruning.report_at, "mode": pruning.mode, "skip_sanity_check": bool(sanity),
           "checkpoints": checkpoints, "ckpt_path": ckpt_path}
    if checkpoints:
        callbacks = [*callbacks, *recovery.checkpoint_callbacks(config, Path(directory) / name)]
    with quiet_lightning(), trial_processes(job):
        curves = trial_curves(config, pruning, logger)  # lr and momentum, the metric by examples seen
        run = build(config, spec=cli, seed=seed, callbacks=[pruning, LossCheck(), *callbacks, *curves], logger=logger,
                    trainer_overrides=overrides, trainer_defaults={**TRAINER_DEFAULTS, **sanity})
        run.fit(**({"ckpt_path": ckpt_path} if ckpt_path else {}))
    sanity_check_passed(key)
    return run


class Objective:
    """``objective(trial) -> float`` for ``study.optimize``: fits the trial's config and returns its value.

    The value is the best (per the study's direction) of ``study.metric`` over the trial's
    validation rounds. ``trial.user_attrs`` record ``seed``, ``config`` (the full run config, which
    ``lightopt fit`` runs), ``log_dir``, ``final_value``, ``epochs``, ``global_step``,
    ``validation_rounds`` and, for a failed trial, ``fail_reason`` and ``traceback`` (also written to
    ``<log_dir>/error.txt``). A training loss that turns NaN or infinite fails the trial
    (:class:`~lightopt.sweep.failures.LossCheck`). A retry of a
    trial whose worker died (``retry_of``, ``seed`` and ``resume_from`` preset by
    :func:`~lightopt.sweep.recovery.enqueue_retries`) keeps the seed and resumes from the
    checkpoint, recording ``resumed_at`` (epoch and global step); when that resume fails (a
    mid-epoch checkpoint that a module cannot continue from), it starts again from the last
    end-of-epoch checkpoint, else from the start, recording ``resume_fallback`` (the checkpoint that
    failed, its error, and where it went on from). ``sys.exit()`` in the trial's code fails the trial
    like any exception. A pruned
    trial raises ``optuna.TrialPruned`` after its fit ended cleanly; a broken one raises
    :class:`TrialFailed`; a metric the module never logs raises
    :class:`~lightopt.sweep.pruning.MetricNotLoggedError`, which stops the sweep.
    """

    def __init__(self, sweep: SweepFile, study_dir: str | Path) -> None:
        if sweep.study is None:
            raise ValueError("`sweep` must have a `study` block to run trials, but got study=None.")
        self.sweep = sweep
        self.study_dir = Path(study_dir)

    def __call__(self, trial: optuna.Trial) -> float:
        with trial_run(trial, self.sweep, self.study_dir):  # the trial's HParams in TensorBoard, however it ends
            return self._fit(trial)

    def _fit(self, trial: optuna.Trial) -> float:
        spec = self.sweep.study
        seed = trial.user_attrs.get("seed", trial_seed(spec.seed, trial.number))  # a retry keeps its seed
        trial.set_user_attr("seed", seed)
        config = self.sweep.search.suggest(trial, self.sweep.run)
        config["seed_everything"] = seed
        trial.set_user_attr("config", copy.deepcopy(config))
        if self.sweep.cli != CliSpec():  # the classes a fixed-class config needs, for `sweep reproduce NAME`
            trial.set_user_attr("lightning_cli", dataclasses.asdict(self.sweep.cli))
        name = f"trial_{trial.number:04d}"
        trial.set_user_attr("log_dir", str(self.study_dir / name))
        mode = "min" if spec.direction == "minimize" else "max"
        resume = trial.user_attrs.get("resume_from")
        resume = resume if resume and Path(resume).is_file() else None
        starts = [resume, *recovery.fallbacks(resume)] if resume is not None else [None]
        try:
            for index, ckpt in enumerate(starts):
                pruning = PruningCallback(trial, spec.metric, spec.report_at, mode)
                start = recovery.StartPoint()
                try:
                    with warnings.catch_warnings():  # a retry resumes another trial's checkpoint: its dirpath differs
                        warnings.filterwarnings("ignore", ".*The dirpath has changed from.*")
                        if index:  # the failed attempt reported some validation rounds already
                            warnings.filterwarnings("ignore", ".*The reported value is ignored because this `step=")
                        run = fit_trial(config, seed, pruning, self.study_dir, name, [start], ckpt, checkpoints=True,
                                            cli=self.sweep.cli)
                    break
                except BaseException as error:
                    if ckpt is None or index + 1 == len(starts) or _passes_through(error) or _interrupting(error):
                        raise
                    # e.g. a module whose epoch-start hooks build state that a mid-epoch checkpoint lacks
                    to = starts[index + 1]
                    trial.set_user_attr("resume_fallback", {"failed": ckpt, "error": failure_reason(error),
                                                            "to": to or "start"})
            resume = ckpt
        except BaseException as error:
            if _passes_through(error) or _interrupting(error):
                raise
            reason = failure_reason(error)
            self._fail(trial, reason, traceback.format_exc())
            raise TrialFailed(reason) from error
        trainer = run.trainer
        if resume is not None:
            trial.set_user_attr("resumed_at", {"epoch": start.epoch, "global_step": start.global_step})
        trial.set_user_attr("epochs", trainer.current_epoch)
        trial.set_user_attr("global_step", trainer.global_step)
        trial.set_user_attr("validation_rounds", len(pruning.history))
        if pruning.history:
            trial.set_user_attr("final_value", pruning.history[-1][1])
        if pruning.failure is not None:
            self._fail(trial, pruning.failure, None)
            raise TrialFailed(pruning.failure)
        if pruning.best is None:
            if not has_validation_step(run.model):
                raise MetricNotLoggedError(
                    f"{type(run.model).__name__} has no validation_step, so no validation round ran and "
                    f"`study.metric` {spec.metric!r} was never computed: add a validation_step that logs it.")
            reason = "no validation round ran: check the trainer's limit_val_batches and check_val_every_n_epoch"
            self._fail(trial, reason, None)
            raise TrialFailed(reason)
        trial.set_user_attr("best_value", pruning.best)
        if pruning.pruned is not None:
            trial.set_user_attr("pruned_at", pruning.pruned)
            raise optuna.TrialPruned(f"pruned at step {pruning.pruned}")
        return pruning.best

    @staticmethod
    def _fail(trial: optuna.Trial, reason: str, trace: str | None) -> None:
        trial.set_user_attr("fail_reason", reason)
        if trace:
            trial.set_user_attr("traceback", trace[-8000:])
        write_error_log(trial.user_attrs.get("log_dir"), reason, trace)


def _passes_through(error: BaseException) -> bool:
    """Errors that are not the trial's: a metric never logged stops the sweep, a failed storage is reported."""
    return isinstance(error, (MetricNotLoggedError, StorageError))


def _interrupting(error: BaseException) -> bool:
    """Ctrl-C or SIGTERM, as raised or as Lightning turns them into ``SystemExit`` after its own shutdown.

    A ``SystemExit`` of the user's code (``sys.exit()`` in a hook) is not one: it fails the trial.
    """
    if isinstance(error, (KeyboardInterrupt, SIGTERMException)):
        return True
    return isinstance(error, SystemExit) and isinstance(error.__context__, KeyboardInterrupt)
