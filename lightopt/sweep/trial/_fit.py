"""One trial's fit: its run config from the trial's parameters, a Lightning fit with the sweep's callbacks.

:func:`trial_config` is the file's run config with a trial's parameters (and seed) set;
:func:`fit_trial` fits a config as every trial does (the sweep's Trainer defaults, a TensorBoard
logger in the trial's folder, :class:`~lightopt.sweep.trial.PruningCallback`, :class:`LossCheck`,
checkpoints, DDP ranks). ``lightopt sweep reproduce`` and the DDP ranks run the same function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from lightopt.runconfig import CliSpec, Run, build
from lightopt.sweep.spec import SweepFile
from lightopt.sweep.trial._build import quiet_lightning
from lightopt.sweep.trial._checkpoints import checkpoint_callbacks
from lightopt.sweep.trial._curves import trial_curves
from lightopt.sweep.trial._distributed import trial_processes
from lightopt.sweep.trial._failures import LossCheck
from lightopt.sweep.trial._pruning import PruningCallback
from lightopt.sweep.trial._sanity import sanity_check_defaults, sanity_check_passed

__all__ = ["TRAINER_DEFAULTS", "fit_trial", "trial_config"]

# Sweeps run many short fits: no progress bar or summary per trial (the runner prints one line each).
TRAINER_DEFAULTS = {"enable_progress_bar": False, "enable_model_summary": False}


def trial_config(sweep: SweepFile, params: Mapping[str, Any], seed: int | None = None) -> dict[str, Any]:
    """The run config of a trial with ``params`` (dotted keys): the file's config with them set.

    With ``seed`` it also sets ``seed_everything``, so ``lightopt fit`` of the result reruns the trial.
    """
    config = sweep.search.apply(sweep.run, params)
    if seed is not None:
        config["seed_everything"] = seed
    return config


def fit_trial(
    config: Mapping[str, Any],
    seed: int,
    pruning: PruningCallback,
    directory: Path,
    name: str,
    callbacks: Sequence[Callback] = (),
    ckpt_path: str | None = None,
    checkpoints: bool = False,
    cli: CliSpec = CliSpec(),
) -> Run:
    """Fit one trial's ``config`` as a sweep does; logs in ``directory / name``; returns the fitted :class:`Run`.

    ``pruning`` watches the metric (its ``best`` is the trial's value); the Trainer gets the sweep's
    defaults (no progress bar or summary; the config's values, an explicit null included, win) and a
    TensorBoard logger in ``directory / name``, first and beside the config's own loggers, unless the
    config sets ``logger: false``. ``cli`` says which LightningCLI builds the config.
    ``callbacks`` are added to the Trainer's; ``checkpoints`` adds a ``ModelCheckpoint`` whose
    ``last.ckpt`` a retried trial resumes from (:func:`~lightopt.sweep.trial.checkpoint_callbacks`);
    ``ckpt_path`` resumes the fit from a checkpoint. Lightning's sanity check runs in the first trial
    of a ``directory`` in this process, not in later ones (unless the config sets
    ``num_sanity_val_steps``); Lightning isolates its random state, so a trial's result is the same
    either way. ``lightopt sweep reproduce`` runs a recorded trial again through this same function.
    A config with ``trainer.strategy: ddp`` runs here as rank 0, its other ranks started by
    :func:`~lightopt.sweep.trial.trial_processes` with the same sanity-check, checkpoint and
    resume settings, so all ranks run the same collectives.
    """
    overrides: dict[str, Any] = {"default_root_dir": str(Path(directory) / name)}
    # name="" and version=name: the logs land in exactly <directory>/<name>.
    logger = TensorBoardLogger(directory, name="", version=name, default_hp_metric=False)
    key = str(Path(directory).resolve())
    sanity = sanity_check_defaults(key)
    job = {
        "config": config,
        "seed": seed,
        "directory": str(directory),
        "name": name,
        "monitor": pruning.monitor,
        "report_at": pruning.report_at,
        "mode": pruning.mode,
        "skip_sanity_check": bool(sanity),
        "checkpoints": checkpoints,
        "ckpt_path": ckpt_path,
    }
    if checkpoints:
        callbacks = [*callbacks, *checkpoint_callbacks(config, Path(directory) / name)]
    with quiet_lightning(), trial_processes(job):
        curves = trial_curves(config, pruning, logger)  # lr and momentum, the metric by examples seen
        run = build(
            config,
            spec=cli,
            seed=seed,
            callbacks=[pruning, LossCheck(), *callbacks, *curves],
            logger=logger,
            trainer_overrides=overrides,
            trainer_defaults={**TRAINER_DEFAULTS, **sanity},
        )
        run.fit(**({"ckpt_path": ckpt_path} if ckpt_path else {}))
    sanity_check_passed(key)
    return run
