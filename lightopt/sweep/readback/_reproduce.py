"""``lightopt sweep reproduce``: run one recorded trial again, as the sweep ran it, and compare the values."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from lightopt.runconfig import ConfigError as SweepConfigError
from lightopt.sweep.readback._show import trial_value
from lightopt.sweep.store import COPIED_FROM, is_better, is_copied, is_minimize, study_dir

if TYPE_CHECKING:  # the spec's file module imports torch: imported when a trial is run again
    from lightopt.sweep.spec import SweepFile

__all__ = ["Reproduction", "reproduce_trial"]


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
    from lightopt.runconfig import CliSpec
    from lightopt.sweep.spec import trial_seed
    from lightopt.sweep.trial import PruningCallback, fit_trial, torch_threads, trial_config

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
    recorded = trial_value(trial)
    if recorded is None:
        raise SweepConfigError(f"trial {number} has no recorded value to compare with.")
    meta = study.user_attrs.get("lightopt", {})
    metric = meta.get("metric") or (sweep.study.metric if sweep and sweep.study else None)
    if metric is None:
        raise SweepConfigError(f"study {study.study_name!r} records no metric; give the sweep file.")
    notes = []
    if sweep is not None:
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
    if state == "PRUNED":
        notes.append(
            f"trial {number} was pruned at step {trial.user_attrs.get('pruned_at', '?')}; it is run to its "
            f"full length now, so the recorded value (its best before pruning) may differ"
        )
    if sweep is not None and sweep.study is not None:
        directory = study_dir(sweep.study.log_dir, study.study_name)
        report_at = sweep.study.report_at
        threads = sweep.study.threads if threads is None else threads
    else:
        recorded_dir = trial.user_attrs.get("log_dir")
        directory = Path(recorded_dir).parent if recorded_dir else study_dir(log_dir, study.study_name)
        report_at = "validation_round"
    # beside the study's directory, not in it: `lightopt tensorboard` shows the study's trials only
    directory = directory.parent / f"{directory.name}-reproduce"
    minimize = is_minimize(study)
    name = f"reproduce_{number:04d}"

    def run(seed: int, name: str) -> float:
        pruning = PruningCallback(
            None, metric, report_at, "min" if minimize else "max"
        )  # reports nothing, never prunes
        with torch_threads(threads):
            fit_trial(
                {**config, "seed_everything": seed},
                seed,
                pruning,
                directory,
                name,
                cli=sweep.cli if sweep is not None else CliSpec(**trial.user_attrs.get("lightning_cli", {})),
            )
        if pruning.failure is not None:
            raise SweepConfigError(f"trial {number} failed when run again with seed {seed}: {pruning.failure}.")
        if pruning.best is None:
            raise SweepConfigError(f"trial {number} ran no validation round when run again.")
        return float(pruning.best)

    value = run(seed, name)
    reseeded = []
    for other in (trial_seed(seed, i) for i in range(1, seeds + 1)):
        try:  # another seed may diverge where the recorded one did not: that is a result, not an error
            reseeded.append((other, run(other, f"{name}_seed_{other}")))
        except Exception as error:
            reseeded.append((other, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__))
    return Reproduction(
        trial, metric, float(recorded), value, config_from, directory / name, tuple(notes), minimize, tuple(reseeded)
    )
