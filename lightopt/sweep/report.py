"""Read a stored study back: find it from a sweep file or a name, tabulate its trials, export the best."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import yaml

from lightopt.sweep import config as _config
from lightopt.sweep.config import SweepConfigError, SweepFile
from lightopt.sweep.objective import trial_config
from lightopt.sweep.runner import _optuna_quiet, best_trial, open_storage, study_dir

__all__ = ["find_study", "trial_rows", "format_table", "best_config"]


def find_study(
    file_or_name: str, storage: str | None = None, log_dir: str = "runs"
) -> tuple[optuna.Study, SweepFile | None, str]:
    """The stored study of a sweep file, or of a study name (default storage under ``log_dir``).

    Opens, never creates: a missing journal file or study is a :class:`SweepConfigError`.
    Returns ``(study, sweep file or None, storage description)``.
    """
    sweep = None
    if Path(file_or_name).is_file() or file_or_name.endswith((".yaml", ".yml")):
        sweep = _config.load(file_or_name)
        if sweep.study is None:
            raise SweepConfigError("the file has no `study` block, so it names no study.", sweep.path)
        name, default_dir = sweep.study.name, study_dir(sweep.study.log_dir, sweep.study.name)
        url = storage if storage is not None else sweep.study.storage
    else:
        name, default_dir, url = file_or_name, study_dir(log_dir, file_or_name), storage
    where = "--storage" if storage is not None else ("study.storage" if sweep else "FILE_or_NAME")
    with _optuna_quiet():
        opened, described = open_storage(url, default_dir, create=False, where=where,
                                          file=sweep.path if sweep and storage is None else None)
        try:
            study = optuna.load_study(study_name=name, storage=opened)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
            raise SweepConfigError(
                f"no study named {name!r} in {described}; studies there: {', '.join(names) or 'none'}."
            ) from None
    return study, sweep, described


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One dict per trial: number, state, value, params, duration (s), seed, and the failure reason."""
    rows = []
    for trial in study.trials:
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        value = trial.value if trial.value is not None else trial.user_attrs.get("best_value")
        rows.append({
            "number": trial.number, "state": trial.state.name, "value": value, "params": trial.params,
            "duration": duration, "seed": trial.user_attrs.get("seed"),
            **({"fail_reason": trial.user_attrs["fail_reason"]} if "fail_reason" in trial.user_attrs else {}),
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
    header = ["number", "state", "value", *names, "duration_s", "seed"]
    body = [[
        str(row["number"]), row["state"], _fmt(row["value"]), *(_fmt(row["params"].get(n, "-")) for n in names),
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
        config = trial_config(sweep, best.params, best.user_attrs.get("seed"))
    return config, best


def dump_config(config: dict[str, Any], study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    metric = study.user_attrs.get("lightopt", {}).get("metric") or "value"
    header = (f"# Best trial {trial.number} of study {study.study_name!r}: {metric}={trial.value:.6g}, "
              f"seed {trial.user_attrs.get('seed')}.\n# Run it again with: lightopt fit THIS_FILE\n")
    return header + yaml.safe_dump(config, sort_keys=False)


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}" if digits != 2 else f"{value:.2f}"
    return "-" if value is None else str(value)
