"""``lightopt sweep reproduce``: run one recorded trial again, as the sweep ran it, and compare the values."""

from __future__ import annotations

import math
import signal
import statistics
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from lightopt.runconfig import ConfigError as SweepConfigError
from lightopt.sweep.readback._show import trial_value
from lightopt.sweep.store import COPIED_FROM, is_better, is_copied, is_minimize, study_dir

if TYPE_CHECKING:  # the spec's file module imports torch: imported when a trial is run again
    from lightopt.runconfig import CliSpec
    from lightopt.sweep.spec import SweepFile

__all__ = ["Reproduction", "TrialRerun", "prepare_rerun", "reproduce_trial"]


@dataclass(frozen=True)
class Reproduction:
    """A trial run again: its recorded value and the new one (both the best over validation rounds)."""

    trial: optuna.trial.FrozenTrial
    metric: str
    recorded: float
    value: float
    config_from: str
    log_dir: Path
    notes: tuple[str, ...] = ()
    minimize: bool = True
    reseeded: tuple[tuple[int, float | str], ...] = ()  # (seed, value, or why that run failed) per other seed

    @property
    def abs_diff(self) -> float:
        return abs(self.value - self.recorded)

    @property
    def rel_diff(self) -> float:
        return self.abs_diff / abs(self.recorded) if self.recorded != 0 else (0.0 if self.abs_diff == 0 else math.inf)

    def summary(self, study_name: str) -> str:
        t = self.trial
        lines = [
            f"trial {t.number} of study {study_name!r} ({t.state.name}), seed {t.user_attrs.get('seed')}, "
            f"config from {self.config_from}"
        ]
        lines += [f"  {key}: {value!r}" for key, value in t.params.items()]
        lines += [f"note: {note}" for note in self.notes]
        lines += [
            f"{self.metric} (best over validation rounds):",
            f"  recorded    {self.recorded:.10g}",
            f"  reproduced  {self.value:.10g}",
            f"  difference  {self.abs_diff:.3g} absolute, {self.rel_diff:.3g} relative",
        ]
        if self.reseeded:
            lines.append(f"with {len(self.reseeded)} other seed(s), the same params:")
            lines += [
                f"  seed {seed:<10d}  " + (f"{value:.10g}" if isinstance(value, float) else f"failed: {value}")
                for seed, value in self.reseeded
            ]
            values = sorted(value for _, value in self.reseeded if isinstance(value, float))
            if values:
                median = statistics.median(values)
                better = sum(is_better(self.recorded, v, self.minimize) for v in values)
                spread = f" ({(values[-1] - values[0]) / abs(median):.0%} of the median)" if median else ""
                lines += [
                    f"  median {median:.6g}, range {values[0]:.6g} to {values[-1]:.6g}{spread}",
                    f"  the recorded value is better than {better} of {len(values)}"
                    + (": part of this trial's result is its seed" if 2 * better > len(values) else ""),
                ]
        lines.append(f"logs: {self.log_dir}")
        return "\n".join(lines)


@dataclass(frozen=True)
class TrialRerun:
    """How a recorded trial is trained again, as the sweep trained it: one source for ``sweep reproduce`` and
    ``sweep best --seeds``.

    ``config`` is the run config (``seed_everything`` replaced per run), ``study_dir`` the study's own
    log folder (reruns log beside it, never in it), ``notes`` what the user should know about the config,
    ``sweep_cli`` the sweep file's LightningCLI classes (None: the trial's recorded ``lightning_cli``, read
    when a run starts: preparing imports no torch, so ``sweep best NAME --seeds N`` with every run recorded
    starts as fast as ``sweep show``).
    """

    trial: optuna.trial.FrozenTrial
    config: dict[str, Any]
    config_from: str
    metric: str
    minimize: bool
    report_at: str
    threads: int | None
    sweep_cli: CliSpec | None
    study_dir: Path
    notes: tuple[str, ...] = ()

    def run(self, seed: int, directory: Path, name: str) -> float:
        """Train the config with ``seed``, logs in ``directory / name``; the metric's best over validation rounds.

        Raises :class:`SweepConfigError` when the fit fails (a non-finite metric) or validates never, and
        ``KeyboardInterrupt`` on Ctrl-C or SIGTERM (which Lightning turns into ``sys.exit(1)`` after its
        shutdown, leaving Ctrl-C ignored: the handler before the fit is restored).
        """
        from lightopt.runconfig import CliSpec
        from lightopt.sweep.trial import PruningCallback, fit_trial, is_interrupt, torch_threads

        number = self.trial.number
        cli = self.sweep_cli
        if cli is None:
            cli = CliSpec(**self.trial.user_attrs.get("lightning_cli", {}))
        pruning = PruningCallback(
            None, self.metric, self.report_at, "min" if self.minimize else "max"
        )  # reports nothing, never prunes
        main = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGINT) if main else None
        try:
            with torch_threads(self.threads):
                fit_trial({**self.config, "seed_everything": seed}, seed, pruning, directory, name, cli=cli)
        except BaseException as error:
            if is_interrupt(error) and not isinstance(error, KeyboardInterrupt):
                raise KeyboardInterrupt from error
            raise
        finally:
            if handler is not None:
                signal.signal(signal.SIGINT, handler)
        if pruning.failure is not None:
            raise SweepConfigError(f"trial {number} failed when run again with seed {seed}: {pruning.failure}.")
        if pruning.best is None:
            raise SweepConfigError(f"trial {number} ran no validation round when run again.")
        return float(pruning.best)


def prepare_rerun(
    study: optuna.Study,
    number: int,
    sweep: SweepFile | None = None,
    *,
    log_dir: str = "runs",
    threads: int | None = None,
) -> TrialRerun:
    """How trial ``number`` of ``study`` is trained again (see :func:`reproduce_trial` for the rules).

    Raises :class:`SweepConfigError` for a trial that is not there, failed, is still running, was
    copied from another study (``study.warm_start``), or has no recorded seed, value or metric (or
    config, without a file).
    """
    trials = {t.number: t for t in study.trials}
    if number not in trials:
        last = f"0 to {len(trials) - 1}" if trials else "none"
        raise SweepConfigError(
            f"`--trial` must be a trial of study {study.study_name!r}, but got {number}; its trials: {last}."
        )
    trial = trials[number]
    state = trial.state.name
    if state == "FAIL":
        reason = trial.user_attrs.get("fail_reason", "no reason recorded")
        raise SweepConfigError(
            f"trial {number} failed ({reason}), so it has no value to reproduce; "
            f"`lightopt sweep show` lists the complete ones."
        )
    if state not in ("COMPLETE", "PRUNED"):
        raise SweepConfigError(f"trial {number} is {state}, not finished, so it has no value to reproduce.")
    if is_copied(trial):
        source = trial.user_attrs[COPIED_FROM]
        raise SweepConfigError(
            f"trial {number} was copied from trial {source.get('trial')} of study {source.get('study')!r} "
            f"(study.warm_start) and never ran here: reproduce it in its own study, with "
            f"`lightopt sweep reproduce {source.get('study')} --trial {source.get('trial')}`."
        )
    seed = trial.user_attrs.get("seed")
    if seed is None:
        raise SweepConfigError(f"trial {number} has no recorded seed, so it cannot be reproduced.")
    if trial_value(trial) is None:
        raise SweepConfigError(f"trial {number} has no recorded value to compare with.")
    meta = study.user_attrs.get("lightopt", {})
    metric = meta.get("metric") or (sweep.study.metric if sweep and sweep.study else None)
    if metric is None:
        raise SweepConfigError(f"study {study.study_name!r} records no metric; give the sweep file.")
    notes = []
    if sweep is not None:
        from lightopt.sweep.trial import trial_config  # imports Lightning, which the sweep file's classes did

        config = trial_config(sweep, trial.params, seed)
        config_from = f"{sweep.path} with the trial's params"
        recorded_config = trial.user_attrs.get("config")
        if recorded_config is not None and recorded_config != config:
            notes.append(
                "the file's config with these params differs from the trial's recorded config "
                "(the file changed since the sweep?); reproducing from the file"
            )
    else:
        config = trial.user_attrs.get("config")
        if config is None:
            raise SweepConfigError(f"trial {number} has no recorded config; give the sweep file instead of the name.")
        config_from = "the trial's recorded config"
    if sweep is not None and sweep.study is not None:
        directory = study_dir(sweep.study.log_dir, study.study_name)
        report_at = sweep.study.report_at
        threads = sweep.study.threads if threads is None else threads
    else:
        recorded_dir = trial.user_attrs.get("log_dir")
        directory = Path(recorded_dir).parent if recorded_dir else study_dir(log_dir, study.study_name)
        report_at = "validation_round"
    cli = sweep.cli if sweep is not None else None
    return TrialRerun(
        trial, config, config_from, metric, is_minimize(study), report_at, threads, cli, directory, tuple(notes)
    )


def reproduce_trial(
    study: optuna.Study,
    number: int,
    sweep: SweepFile | None = None,
    *,
    log_dir: str = "runs",
    threads: int | None = None,
    seeds: int = 0,
) -> Reproduction:
    """Run trial ``number`` of ``study`` again, as the sweep ran it, and compare the values.

    The config is the sweep file's with the trial's params applied and ``seed_everything`` set to
    the trial's recorded seed (without a file: the trial's recorded config). The fit goes through
    the same :func:`~lightopt.sweep.trial.fit_trial` as the sweep's, and its value is the best
    of the study's metric over the validation rounds. A pruned trial is run to its full length,
    so its value is compared with the best it reached before it was pruned. Logs go to
    ``<log_dir>/<study>-reproduce/reproduce_NNNN``, beside the study's directory rather than in it, so
    TensorBoard on the study shows its trials only. ``threads`` defaults to the file's ``study.threads``.

    ``seeds`` > 0 also trains the same params with that many other seeds (``trial_seed(recorded
    seed, i)`` for i = 1, 2, ...; logs in ``reproduce_NNNN_seed_S``): how much of the trial's value
    came from its seed. A sweep's best trial is the best of many noisy values, so it is usually
    luckier than its params.

    Raises :class:`SweepConfigError` for a trial that is not there, failed, is still running, was
    copied from another study (``study.warm_start``), or has no recorded seed (or config, without a file).
    """
    from lightopt.sweep.spec import trial_seed

    rerun = prepare_rerun(study, number, sweep, log_dir=log_dir, threads=threads)
    trial = rerun.trial
    seed = trial.user_attrs["seed"]
    notes = list(rerun.notes)
    if trial.state.name == "PRUNED":
        notes.append(
            f"trial {number} was pruned at step {trial.user_attrs.get('pruned_at', '?')}; it is run to its "
            f"full length now, so the recorded value (its best before pruning) may differ"
        )
    # beside the study's directory, not in it: `lightopt tensorboard` shows the study's trials only
    directory = rerun.study_dir.parent / f"{rerun.study_dir.name}-reproduce"
    name = f"reproduce_{number:04d}"
    value = rerun.run(seed, directory, name)
    reseeded = []
    for other in (trial_seed(seed, i) for i in range(1, seeds + 1)):
        try:  # another seed may diverge where the recorded one did not: that is a result, not an error
            reseeded.append((other, rerun.run(other, directory, f"{name}_seed_{other}")))
        except Exception as error:
            reseeded.append((other, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__))
    return Reproduction(
        trial,
        rerun.metric,
        float(trial_value(trial)),
        value,
        rerun.config_from,
        directory / name,
        tuple(notes),
        rerun.minimize,
        tuple(reseeded),
    )
