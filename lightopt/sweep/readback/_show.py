"""``lightopt sweep show``: a stored study's trials as a table or as JSON, and the best trial.

With several objectives: a column per metric, the trials on the Pareto front marked ``*``, and
the front listed where the best trial would be; in JSON each row also has ``values`` (one per
metric) and ``pareto`` (whether it is on the front), and ``best`` is null beside ``best_trials``
(the front's rows), ``metrics`` and ``directions``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import optuna

from lightopt.sweep.spec import config_values, recorded_range_test
from lightopt.sweep.store import COPIED_FROM, ENQUEUED, best_trial, minimizes, objective_names, pareto_front

__all__ = ["format_table", "study_json", "trial_rows", "trial_value"]


def trial_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """A trial's value as lightopt shows it everywhere: the best of the study's metric over its validation rounds.

    For a COMPLETE trial that is the value Optuna ranks. A PRUNED trial's Optuna value is its last
    report; lightopt shows the best it reached before it was pruned (recorded as ``best_value``), the
    number TensorBoard's HParams row and ``sweep reproduce`` show too. A FAIL trial has none. With
    several objectives it is the first one's (see :func:`trial_values` for all).
    """
    if trial.state.name == "FAIL":
        return None
    recorded = trial.user_attrs.get("best_value")
    if trial.state.name == "COMPLETE" and trial.values is not None and len(trial.values) > 1:
        return trial.values[0]
    return trial.value if recorded is None or trial.state.name == "COMPLETE" else recorded


def trial_values(trial: optuna.trial.FrozenTrial) -> list[float] | None:
    """A trial's value of each objective: Optuna's for a COMPLETE trial; for a PRUNED one, those it recorded.

    Optuna keeps no values for a pruned trial of a study with several objectives; lightopt records
    them (``objective_values``: all from the round where the first metric was best). FAIL: None.
    """
    if trial.state.name == "COMPLETE" and trial.values is not None:
        return list(trial.values)
    if trial.state.name == "FAIL":
        return None
    return trial.user_attrs.get("objective_values")


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One dict per trial: number, state, value, params, the config values of params sampled in another
    coordinate (``config_values``), duration (s), seed, a failed trial's reason and traceback, and where
    the trial came from: ``copied_from`` (``{study, trial}``, a ``study.warm_start`` copy, never run
    here) or ``enqueued`` (the ``study.enqueue`` entry's label)."""
    rows = []
    several = len(study.directions) > 1
    front = {t.number for t in pareto_front(study.get_trials(deepcopy=False), minimizes(study))} if several else set()
    for trial in study.trials:
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        attrs = trial.user_attrs
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": trial_value(trial),
                "params": trial.params,
                "config_values": config_values(trial.params, attrs.get("config")),
                "duration": duration,
                "seed": attrs.get("seed"),
                **{key: attrs[key] for key in ("fail_reason", "traceback", COPIED_FROM, ENQUEUED) if key in attrs},
            }
        )
        if several:
            rows[-1]["values"] = trial_values(trial)
            rows[-1]["pareto"] = trial.number in front
    return rows


def study_json(study: optuna.Study) -> str:
    rows = trial_rows(study)
    if len(study.directions) > 1:
        data = {
            "study": study.study_name,
            "directions": [d.name.lower() for d in study.directions],
            "metrics": objective_names(study),
            "trials": rows,
            "best": None,
            "best_trials": [row for row in rows if row["pareto"]],
        }
        return json.dumps(data, indent=2, default=str)
    best = best_trial(study)
    data = {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "metric": study.user_attrs.get("lightopt", {}).get("metric"),
        "range_test": recorded_range_test(study.user_attrs),
        "trials": rows,
        "best": None if best is None else next(r for r in rows if r["number"] == best.number),
    }
    return json.dumps(data, indent=2, default=str)


def format_table(study: optuna.Study) -> str:
    """The trial table as text, then the best trial; first the bounds a range test set, if one did.

    A ``from`` column says where a trial came from when one did not come from the sampler:
    ``copied old#12`` (copied by ``study.warm_start`` from trial 12 of study ``old``; never the best)
    or ``enqueued #1`` (``study.enqueue``'s entry).
    """
    rows = trial_rows(study)
    names = list(dict.fromkeys(name for row in rows for name in row["params"]))
    converted = {name for row in rows for name in row["config_values"]}
    # a param sampled in another coordinate, then the value its config got: momentum:horizon h, then α
    columns = [
        c
        for name in names
        for c in ([(name, "params"), (name, "config_values")] if name in converted else [(name, "params")])
    ]
    several = len(study.directions) > 1
    objectives = objective_names(study)
    header = [
        "number",
        "state",
        *([*objectives, "front"] if several else ["value"]),
        *(name if kind == "params" else "= " + name.partition(":")[0] for name, kind in columns),
        "duration_s",
        "seed",
        *(["from"] if any(_origin(row) for row in rows) else []),
    ]
    body = [
        [
            str(row["number"]),
            row["state"],
            *(_value_cells(row, len(objectives)) if several else [_fmt(row["value"])]),
            *(_fmt(row[kind].get(n, "-")) for n, kind in columns),
            _fmt(row["duration"], 2),
            str(row["seed"]),
            *([_origin(row) or "-"] if any(_origin(r) for r in rows) else []),
        ]
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header, *body]]
    if several:
        front = [str(row["number"]) for row in rows if row["pareto"]]
        lines.append(
            f"Pareto front (*): trial{'s' if len(front) > 1 else ''} {', '.join(front)}; export one with "
            f"`lightopt sweep best {study.study_name} --trial K --export PATH`"
            if front
            else "Pareto front: no completed trial"
        )
        return "\n".join(lines)
    best = best_trial(study)
    metric = study.user_attrs.get("lightopt", {}).get("metric") or "value"
    lines.append(f"best: trial {best.number}, {metric}={best.value:.6g}" if best else "best: no completed trial")
    tested = recorded_range_test(study.user_attrs)
    if tested is not None:
        lines.insert(0, _range_test_line(tested))
    return "\n".join(lines)


def _origin(row: dict[str, Any]) -> str:
    """``copied old#12``, ``enqueued #1``, or ``""`` for a trial the sampler drew."""
    if COPIED_FROM in row:
        return f"copied {row[COPIED_FROM].get('study')}#{row[COPIED_FROM].get('trial')}"
    return f"enqueued {row[ENQUEUED]}" if ENQUEUED in row else ""


def _range_test_line(record: dict[str, Any]) -> str:
    """One line for a recorded range test: the entry's bounds, the coordinate, where it diverged.

    Example:
        >>> _range_test_line({"name": "optimizer.init_args.lr", "low": 0.001, "high": 0.1, "diverged_at": 1.2})
        'range test (run when the study was created): optimizer.init_args.lr in [0.001, 0.1]; it diverged at 1.2'
    """
    bounds = f"[{record['low']:.3g}, {record['high']:.3g}]"
    line = f"range test (run when the study was created): {record.get('name')} in {bounds}"
    if record.get("momentum") is not None:
        line += f" at momentum {record['momentum']:g}"
    if record.get("diverged_at") is not None:
        line += f"; it diverged at {record['diverged_at']:.3g}"
    return line


def _value_cells(row: dict[str, Any], count: int) -> list[str]:
    """A row's value of each of ``count`` objectives, then ``*`` if it is on the Pareto front."""
    return [*(_fmt(value) for value in (row["values"] or [None] * count)), "*" if row["pareto"] else ""]


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}" if digits != 2 else f"{value:.2f}"
    return "-" if value is None else str(value)
