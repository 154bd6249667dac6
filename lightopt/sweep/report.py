"""Read a stored study back: find it from a sweep file or a name, tabulate its trials, export the best,
reproduce one trial, and draw Optuna's plots of it."""

from __future__ import annotations

import json
import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from lightopt.runconfig import ConfigError as SweepConfigError
from lightopt.runconfig import dump_yaml
from lightopt.sweep.coordinates import config_values
from lightopt.sweep.locate import best_trial, find_study, optuna_quiet, study_dir

if TYPE_CHECKING:  # config, objective and pruning import torch and Lightning: `sweep show` needs neither
    from lightopt.sweep.config import SweepFile

__all__ = ["find_study", "trial_value", "trial_rows", "format_table", "best_config", "Reproduction", "reproduce_trial", "plot_study"]


def trial_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """A trial's value as lightopt shows it everywhere: the best of the study's metric over its validation rounds.

    For a COMPLETE trial that is the value Optuna ranks. A PRUNED trial's Optuna value is its last
    report; lightopt shows the best it reached before it was pruned (recorded as ``best_value``), the
    number TensorBoard's HParams row and ``sweep reproduce`` show too. A FAIL trial has none.
    """
    if trial.state.name == "FAIL":
        return None
    recorded = trial.user_attrs.get("best_value")
    return trial.value if recorded is None or trial.state.name == "COMPLETE" else recorded


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One dict per trial: number, state, value, params, the config values of params sampled in another
    coordinate (``config_values``), duration (s), seed, and a failed trial's reason and traceback."""
    rows = []
    for trial in study.trials:
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        attrs = trial.user_attrs
        rows.append({
            "number": trial.number, "state": trial.state.name, "value": trial_value(trial), "params": trial.params,
            "config_values": config_values(trial.params, attrs.get("config")),
            "duration": duration, "seed": attrs.get("seed"),
            **{key: attrs[key] for key in ("fail_reason", "traceback") if key in attrs},
        })
    return rows


def study_json(study: optuna.Study) -> str:
    best = best_trial(study)
    rows = trial_rows(study)
    data = {
        "study": study.study_name, "direction": study.direction.name.lower(),
        "metric": study.user_attrs.get("lightopt", {}).get("metric"), "trials": rows,
        "best": None if best is None else next(r for r in rows if r["number"] == best.number),
    }
    return json.dumps(data, indent=2, default=str)


def format_table(study: optuna.Study) -> str:
    """The trial table as text, then the best trial."""
    rows = trial_rows(study)
    names = list(dict.fromkeys(name for row in rows for name in row["params"]))
    converted = {name for row in rows for name in row["config_values"]}
    # a param sampled in another coordinate, then the value its config got: momentum:horizon h, then α
    columns = [c for name in names for c in ([(name, "params"), (name, "config_values")] if name in converted
                                             else [(name, "params")])]
    header = ["number", "state", "value",
              *(name if kind == "params" else "= " + name.partition(":")[0] for name, kind in columns),
              "duration_s", "seed"]
    body = [[
        str(row["number"]), row["state"], _fmt(row["value"]), *(_fmt(row[kind].get(n, "-")) for n, kind in columns),
        _fmt(row["duration"], 2), str(row["seed"]),
    ] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *body]]
    best = best_trial(study)
    metric = study.user_attrs.get("lightopt", {}).get("metric") or "value"
    lines.append(f"best: trial {best.number}, {metric}={best.value:.6g}" if best else "best: no completed trial")
    return "\n".join(lines)


def best_config(study: optuna.Study, sweep: SweepFile | None = None) -> tuple[dict[str, Any], optuna.trial.FrozenTrial]:
    """The run config of the best trial, ``seed_everything`` set to its seed: ``lightopt fit`` reruns it.

    Taken from the trial's recorded ``config``; rebuilt from the sweep file and the trial's params
    when the trial has none.
    """
    best = best_trial(study)
    if best is None:
        raise SweepConfigError(f"study {study.study_name!r} has no completed trial yet.")
    config = best.user_attrs.get("config")
    if config is None:
        if sweep is None:
            raise SweepConfigError(f"trial {best.number} has no recorded config; give the sweep file instead of the name.")
        from lightopt.sweep.objective import trial_config

        config = trial_config(sweep, best.params, best.user_attrs.get("seed"))
    return config, best


def dump_config(config: dict[str, Any], study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    metric = study.user_attrs.get("lightopt", {}).get("metric") or "value"
    header = (f"# Best trial {trial.number} of study {study.study_name!r}: {metric}={trial.value:.6g}, "
              f"seed {trial.user_attrs.get('seed')}.\n# Run it again with: lightopt fit THIS_FILE\n")
    return header + dump_yaml(config)


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}" if digits != 2 else f"{value:.2f}"
    return "-" if value is None else str(value)


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
        lines = [f"trial {t.number} of study {study_name!r} ({t.state.name}), seed {t.user_attrs.get('seed')}, "
                 f"config from {self.config_from}"]
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
            lines += [f"  seed {seed:<10d}  " + (f"{value:.10g}" if isinstance(value, float) else f"failed: {value}")
                      for seed, value in self.reseeded]
            values = sorted(value for _, value in self.reseeded if isinstance(value, float))
            if values:
                median = statistics.median(values)
                better = sum(self.recorded < v if self.minimize else self.recorded > v for v in values)
                spread = f" ({(values[-1] - values[0]) / abs(median):.0%} of the median)" if median else ""
                lines += [f"  median {median:.6g}, range {values[0]:.6g} to {values[-1]:.6g}{spread}",
                          f"  the recorded value is better than {better} of {len(values)}"
                          + (": part of this trial's result is its seed" if 2 * better > len(values) else "")]
        lines.append(f"logs: {self.log_dir}")
        return "\n".join(lines)


def reproduce_trial(
    study: optuna.Study, number: int, sweep: SweepFile | None = None, *, log_dir: str = "runs",
    threads: int | None = None, seeds: int = 0,
) -> Reproduction:
    """Run trial ``number`` of ``study`` again, as the sweep ran it, and compare the values.

    The config is the sweep file's with the trial's params applied and ``seed_everything`` set to
    the trial's recorded seed (without a file: the trial's recorded config). The fit goes through
    the same :func:`~lightopt.sweep.objective.fit_trial` as the sweep's, and its value is the best
    of the study's metric over the validation rounds. A pruned trial is run to its full length,
    so its value is compared with the best it reached before it was pruned. Logs go to
    ``<log_dir>/<study>-reproduce/reproduce_NNNN``, beside the study's directory rather than in it, so
    TensorBoard on the study shows its trials only. ``threads`` defaults to the file's ``study.threads``.

    ``seeds`` > 0 also trains the same params with that many other seeds (``trial_seed(recorded
    seed, i)`` for i = 1, 2, ...; logs in ``reproduce_NNNN_seed_S``): how much of the trial's value
    came from its seed. A sweep's best trial is the best of many noisy values, so it is usually
    luckier than its params.

    Raises :class:`SweepConfigError` for a trial that is not there, failed, is still running, or
    has no recorded seed (or config, without a file).
    """
    from lightopt.runconfig import CliSpec
    from lightopt.sweep.build import torch_threads
    from lightopt.sweep.objective import fit_trial, trial_config, trial_seed
    from lightopt.sweep.pruning import PruningCallback

    trials = {t.number: t for t in study.trials}
    if number not in trials:
        last = f"0 to {len(trials) - 1}" if trials else "none"
        raise SweepConfigError(f"`--trial` must be a trial of study {study.study_name!r}, but got {number}; "
                               f"its trials: {last}.")
    trial = trials[number]
    state = trial.state.name
    if state == "FAIL":
        reason = trial.user_attrs.get("fail_reason", "no reason recorded")
        raise SweepConfigError(f"trial {number} failed ({reason}), so it has no value to reproduce; "
                               f"`lightopt sweep show` lists the complete ones.")
    if state not in ("COMPLETE", "PRUNED"):
        raise SweepConfigError(f"trial {number} is {state}, not finished, so it has no value to reproduce.")
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
            notes.append("the file's config with these params differs from the trial's recorded config "
                         "(the file changed since the sweep?); reproducing from the file")
    else:
        config = trial.user_attrs.get("config")
        if config is None:
            raise SweepConfigError(f"trial {number} has no recorded config; give the sweep file instead of the name.")
        config_from = "the trial's recorded config"
    if state == "PRUNED":
        notes.append(f"trial {number} was pruned at step {trial.user_attrs.get('pruned_at', '?')}; it is run to its "
                     f"full length now, so the recorded value (its best before pruning) may differ")
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
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    name = f"reproduce_{number:04d}"

    def run(seed: int, name: str) -> float:
        pruning = PruningCallback(None, metric, report_at, "min" if minimize else "max")  # reports nothing, never prunes
        with torch_threads(threads):
            fit_trial({**config, "seed_everything": seed}, seed, pruning, directory, name,
                      cli=sweep.cli if sweep is not None else CliSpec(**trial.user_attrs.get("lightning_cli", {})))
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
        except Exception as error:  # noqa: BLE001  (the user's module may raise anything; the other runs stand)
            reseeded.append((other, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__))
    return Reproduction(trial, metric, float(recorded), value, config_from, directory / name, tuple(notes),
                        minimize, tuple(reseeded))


# name -> (optuna.visualization.matplotlib function, least number of params)
_PLOTS = (("optimization_history", "plot_optimization_history", 0), ("param_importances", "plot_param_importances", 2),
          ("parallel_coordinate", "plot_parallel_coordinate", 1), ("slice", "plot_slice", 1),
          ("contour", "plot_contour", 2))


def plot_study(study: optuna.Study, out_dir: str | Path) -> tuple[list[Path], list[str]]:
    """Write Optuna's matplotlib plots of ``study`` as PNG files into ``out_dir``.

    Optimization history, parameter importances (needs 2 complete trials and 2 params),
    parallel coordinates, slices and contours (needs 2 params). Returns ``(paths written,
    notes on the plots skipped)``. Uses pyplot's current backend; ``lightopt sweep plot`` sets Agg.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_mpl

    from lightopt.sweep._plot_labels import draw

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise SweepConfigError(f"study {study.study_name!r} has no completed trial to plot.")
    n_params = len({name for t in complete for name in t.params})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, notes = [], []
    for name, function, least in _PLOTS:
        if n_params < least:
            notes.append(f"{name}: skipped, it needs at least {least} searched parameters (the study has {n_params})")
            continue
        if name == "param_importances" and len(complete) < 2:
            notes.append(f"{name}: skipped, it needs at least 2 complete trials (the study has {len(complete)})")
            continue
        with warnings.catch_warnings(), optuna_quiet():
            warnings.filterwarnings("ignore", category=ExperimentalWarning)
            try:
                axes = draw(getattr(optuna_mpl, function), study, name)  # short distinct labels, log axes, fitted sizes
            except (ValueError, RuntimeError) as error:
                notes.append(f"{name}: skipped, {error}")
                continue
        figure = np.asarray(axes, dtype=object).flat[0].figure
        path = out / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written, notes
