"""Where lightopt's per-trial cost goes on PostgreSQL: SQL statements per trial, by statement and by caller.

Runs lightopt's arm of ``scale.py`` (stub fit, random sampler, 1 worker) in this process on a fresh
database of a real PostgreSQL 15 (``tests/sweep/postgres.py``), counts every SQL statement with
SQLAlchemy's ``before_cursor_execute`` and charges it to the trial running when it was issued
(trials are told apart by the stub fit's start stamps) and to the innermost lightopt frame that
led to it. Prints statements per trial over the first and the last window of trials, the top
statements and callers, and (``--cprofile``) cProfile's top functions by cumulative time.

    python benchmarks/scale_profile.py --trials 200 [--cprofile]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import os
import pstats
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy

import benchmarks.scale as scale


def _caller() -> str:
    """The storage method called and the innermost lightopt frame outside the storage wrapper that called it."""
    stack = traceback.extract_stack()[:-3]
    method = "-"
    for frame in stack:
        if "/optuna/storages/" in frame.filename and frame.name not in ("_retry", "<lambda>"):
            method = frame.name
            break
    for frame in reversed(stack):
        if "/lightopt/" in frame.filename and "store/_storage.py" not in frame.filename:
            return f"{method} <- {frame.filename.split('/lightopt/', 1)[1]}:{frame.lineno}:{frame.name}"
    return f"{method} <- -"


def _kind(statement: str) -> str:
    text = " ".join(statement.split())
    if text.startswith("SELECT"):
        tables = re.findall(r"FROM (\w+)", text)
        return "SELECT " + ",".join(dict.fromkeys(tables))
    return " ".join(text.split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--arm", choices=["lightopt", "optuna"], default="lightopt")
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="lightopt's arm: first grow the study by this many finished trials (copies of its first 5), then "
        "measure --trials more, as at that size",
    )
    args = parser.parse_args()

    server, version = scale._server()
    database = server.new_database()
    url = server.url(database)
    trial_now = [-1]
    per_trial: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    by_caller: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)

    @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany):
        per_trial[trial_now[0]][_kind(statement)] += 1
        by_caller[trial_now[0]][_caller()] += 1

    stamps = scale.Stamps()
    original = stamps.__call__

    class Counting(scale.Stamps):
        def __call__(self, number: int) -> None:
            trial_now[0] = number
            original(number)

    stamps.__class__ = Counting
    from lightopt.sweep import Objective, run_sweep
    from lightopt.sweep.spec import parse

    Objective.fit_trial = staticmethod(scale._stub_fit(stamps))

    def optuna_alone() -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name="scale",
            storage=optuna.storages.RDBStorage(url),
            direction="minimize",
            sampler=scale._sampler("random"),
            pruner=optuna.pruners.MedianPruner(
                n_startup_trials=scale.PRUNER["n_startup_trials"], n_warmup_steps=scale.PRUNER["n_warmup_steps"]
            ),
        )
        stop = optuna.study.MaxTrialsCallback(args.trials, states=None)
        study.optimize(scale._objective(stamps), callbacks=[stop], gc_after_trial=False)

    profiler = cProfile.Profile() if args.cprofile else None
    try:
        with tempfile.TemporaryDirectory(prefix="scale-profile-", dir="/dev/shm") as scratch:
            sweep = parse(scale.sweep_data(str(Path(scratch) / "runs"), args.trials, "random"), "scale.yaml")
            started = time.time()
            with open(os.devnull, "w") as out:
                if profiler:
                    profiler.enable()
                if args.arm == "lightopt" and args.prefill:
                    if profiler:
                        profiler.disable()
                    first = parse(scale.sweep_data(str(Path(scratch) / "runs"), 5, "random"), "scale.yaml")
                    run_sweep(first, storage=url, out=out)
                    _prefill(url, args.prefill)
                    data = scale.sweep_data(str(Path(scratch) / "runs"), 5 + args.prefill + args.trials, "random")
                    trial_now[0] = -1
                    per_trial.clear()
                    by_caller.clear()
                    stamps.starts.clear()
                    stamps.cpu.clear()
                    started = time.time()
                    if profiler:
                        profiler.enable()
                    run_sweep(parse(data, "scale.yaml"), storage=url, out=out)
                elif args.arm == "lightopt":
                    run_sweep(sweep, storage=url, out=out)
                else:
                    optuna_alone()
                if profiler:
                    profiler.disable()
            wall = time.time() - started
    finally:
        server.stop()
    numbers = sorted(n for n in per_trial if n >= 0)
    cpu = [b - a for a, b in zip(stamps.cpu, stamps.cpu[1:])]  # each trial's CPU, start to next start
    first = [n for n in numbers if numbers[0] < n <= numbers[0] + args.window]
    last = [n for n in numbers if n > numbers[-1] - args.window]

    def mean(which: list[int], table: dict[int, collections.Counter]) -> collections.Counter:
        total: collections.Counter = collections.Counter()
        for n in which:
            total.update(table[n])
        return collections.Counter({k: round(v / len(which), 2) for k, v in total.items()})

    report = {
        "postgres": version,
        "arm": args.arm,
        "trials": len(numbers),
        "wall_s": round(wall, 1),
        "statements_per_trial": {
            f"trials {first[0]}-{first[-1]}": sum(mean(first, per_trial).values()),
            f"trials {last[0]}-{last[-1]}": sum(mean(last, per_trial).values()),
        },
        "by_statement_last": dict(mean(last, per_trial).most_common(25)),
        "by_caller_last": dict(mean(last, by_caller).most_common(25)),
        "before_first_trial": sum(per_trial[-1].values()),
        "prefill": args.prefill,
        "cpu_ms_per_trial": {
            f"first {args.window}": round(1000 * sum(cpu[1 : args.window + 1]) / len(cpu[1 : args.window + 1]), 2),
            f"last {args.window}": round(1000 * sum(cpu[-args.window :]) / len(cpu[-args.window :]), 2),
        },
    }
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if profiler:
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(45)
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(30)
        print(stream.getvalue())
    return 0


def _prefill(url: str, n: int) -> None:
    """Grow the study at ``url`` by ``n`` finished trials: copies of its first ones, added in Optuna's way."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="scale", storage=url)
    seeds = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    batch = []
    for i in range(n):
        t = seeds[i % len(seeds)]
        batch.append(
            optuna.trial.create_trial(
                state=t.state,
                value=t.value,
                params=t.params,
                distributions=t.distributions,
                user_attrs=t.user_attrs,
                intermediate_values=t.intermediate_values,
            )
        )
    study.add_trials(batch)


if __name__ == "__main__":
    raise SystemExit(main())
