"""Where lightopt's per-trial cost goes on PostgreSQL: SQL statements per trial, by statement and by caller.

Runs lightopt's arm of ``scale.py`` (stub fit, random sampler, 1 worker), or Optuna alone's
(``--arm optuna``), in this process on a fresh database of a real PostgreSQL 15
(``tests/sweep/postgres.py``). It counts every SQL statement with SQLAlchemy's
``before_cursor_execute`` (its parameters and, after it, the rows it touched) and charges it to
the trial running when it was issued (trials are told apart by the stub fit's start stamps) and
to the innermost lightopt frame that led to it (``--no-callers``: not, which saves a stack walk
per statement; ``--no-count``: no counting at all). It prints statements per trial over the first
and the last window of trials, the top statements and callers, each block's CPU per trial and
the cycle collector's share of it, the plot drawings, and:

* ``--cprofile``: cProfile's top functions by cumulative time, over the whole run, in CPU time
  (so that what else runs on the machine changes the profile little);
* ``--windows A B C D``: two cProfile windows in one run, trials A..B-1 and C..D-1, and the
  functions whose CPU and calls per trial grew most from the first to the second;
* ``--prefill N``: the study grown first to N finished trials (copies of its first 5), then
  ``--trials`` more measured, as at that size;
* ``--disable PART...``: lightopt's arm without parts of its per-trial bookkeeping (TensorBoard's
  study run, the plots drawn during the sweep (the final drawing stays), the progress line, the
  failure watch, the memory cleanup).

    python benchmarks/scale_profile.py --trials 200 [--cprofile]
    python benchmarks/scale_profile.py --trials 4000 --no-callers --block 500      # statements and CPU as it grows
    python benchmarks/scale_profile.py --trials 4000 --no-count --windows 300 600 3600 3900
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gc
import importlib
import io
import json
import os
import pstats
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
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
    parser.add_argument("--block", type=int, default=100, help="trials per block of the CPU-per-trial series")
    parser.add_argument(
        "--disable",
        nargs="+",
        default=[],
        choices=sorted(_PARTS),
        help="lightopt's arm: leave out these parts of the per-trial bookkeeping, to find which one costs what",
    )
    parser.add_argument("--out", default=None)
    parser.add_argument("--arm", choices=["lightopt", "optuna"], default="lightopt")
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="first grow the study by this many finished trials (copies of its first 5), then measure --trials "
        "more, as at that size",
    )
    parser.add_argument(
        "--no-callers", action="store_true", help="count statements, not the lightopt line that issued each"
    )
    parser.add_argument(
        "--no-count",
        action="store_true",
        help="do not count SQL statements (the count walks the stack at each one, which costs more than the rest)",
    )
    parser.add_argument(
        "--windows",
        type=int,
        nargs=4,
        metavar=("A", "B", "C", "D"),
        default=None,
        help="profile only trials A to B-1 and C to D-1 of one run, each window in a profile of its own, and print "
        "the functions whose CPU per trial grew most from the first to the second",
    )
    args = parser.parse_args()

    server, version = scale._server()
    database = server.new_database()
    url = server.url(database)
    trial_now = [-1]
    per_trial: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    by_caller: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)

    sizes: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)  # parameters and rows

    def count(conn, cursor, statement, parameters, context, executemany):
        kind = _kind(statement)
        per_trial[trial_now[0]][kind] += 1
        sizes[trial_now[0]][f"{kind} (parameters)"] += len(parameters) if parameters else 0
        if not args.no_callers:
            by_caller[trial_now[0]][_caller()] += 1

    def rows(conn, cursor, statement, parameters, context, executemany):
        sizes[trial_now[0]][f"{_kind(statement)} (rows)"] += max(cursor.rowcount, 0)

    if not args.no_count:
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "after_cursor_execute", rows)

    if not args.no_count:
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", count)

    stamps = scale.Stamps()
    original = stamps.__call__

    windows = [cProfile.Profile(time.process_time), cProfile.Profile(time.process_time)] if args.windows else []
    collections_by_trial: dict[int, list[float]] = collections.defaultdict(lambda: [0.0, 0, 0, 0])
    collecting = [0.0]

    def collector(phase: str, info: dict[str, int]) -> None:  # the cycle collector's own CPU, charged to the trial
        if phase == "start":
            collecting[0] = time.process_time()
            return
        entry = collections_by_trial[trial_now[0]]
        entry[0] += time.process_time() - collecting[0]
        entry[1 + info["generation"]] += 1

    gc.callbacks.append(collector)

    class Counting(scale.Stamps):
        def __call__(self, number: int) -> None:
            trial_now[0] = number
            if windows:  # trial numbers count from the study's first trial, the prefill's included
                for window, (start, end) in zip(windows, (args.windows[:2], args.windows[2:])):
                    if number == end:
                        window.disable()
                    elif number == start:
                        window.enable()
            original(number)

    stamps.__class__ = Counting
    from lightopt.sweep import Objective, run_sweep
    from lightopt.sweep.spec import parse
    from lightopt.sweep.study import StudyRun

    Objective.fit_trial = staticmethod(scale._stub_fit(stamps))
    scale.record_drawings(StudyRun, stamps)
    for part in args.disable:
        _PARTS[part]()

    def optuna_alone(trials: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            study_name="scale",
            load_if_exists=True,
            storage=optuna.storages.RDBStorage(url),
            direction="minimize",
            sampler=scale._sampler("random"),
            pruner=optuna.pruners.MedianPruner(
                n_startup_trials=scale.PRUNER["n_startup_trials"], n_warmup_steps=scale.PRUNER["n_warmup_steps"]
            ),
        )
        stop = optuna.study.MaxTrialsCallback(trials, states=None)
        study.optimize(scale._objective(stamps), callbacks=[stop], gc_after_trial=False)

    def restart() -> float:
        """Forget what the first trials counted; the measured ones start now."""
        trial_now[0] = -1
        per_trial.clear()
        by_caller.clear()
        stamps.starts.clear()
        stamps.cpu.clear()
        return time.time()

    # CPU time, not the wall clock: the profile of one arm is then not changed by what else runs
    profiler = cProfile.Profile(time.process_time) if args.cprofile else None
    try:
        with tempfile.TemporaryDirectory(prefix="scale-profile-", dir="/dev/shm") as scratch:
            started = time.time()
            with open(os.devnull, "w") as out:
                if profiler:
                    profiler.enable()
                if args.prefill:
                    if profiler:
                        profiler.disable()
                    if args.arm == "lightopt":
                        first = parse(scale.sweep_data(str(Path(scratch) / "runs"), 5, "random"), "scale.yaml")
                        run_sweep(first, storage=url, out=out)
                    else:
                        optuna_alone(5)
                    _prefill(url, args.prefill)
                    started = restart()
                    if profiler:
                        profiler.enable()
                total = 5 + args.prefill + args.trials if args.prefill else args.trials
                if args.arm == "lightopt":
                    data = scale.sweep_data(str(Path(scratch) / "runs"), total, "random")
                    run_sweep(parse(data, "scale.yaml"), storage=url, out=out)
                else:
                    optuna_alone(total)
                if profiler:
                    profiler.disable()
            wall = time.time() - started
    finally:
        server.stop()
    numbers = sorted(number for _, number in stamps.starts)
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
        "parameters_and_rows_first": dict(mean(first, sizes).most_common(25)),
        "parameters_and_rows_last": dict(mean(last, sizes).most_common(25)),
        "before_first_trial": sum(per_trial[-1].values()),
        "prefill": args.prefill,
        "cpu_ms_per_trial_by_block": [  # (first trial of the block, CPU ms per trial in it)
            [numbers[i], round(1000 * sum(cpu[i : i + args.block]) / len(cpu[i : i + args.block]), 2)]
            for i in range(0, len(cpu), args.block)
        ],
        "drawings": [[n, round(seconds, 2)] for n, seconds in stamps.draws],  # (trials started, its CPU s)
        "collector_by_block": [  # (first trial, the cycle collector's CPU ms per trial, passes of generation 0/1/2)
            [
                numbers[i],
                round(1000 * sum(collections_by_trial[n][0] for n in numbers[i : i + args.block]) / args.block, 3),
                *(sum(collections_by_trial[n][g] for n in numbers[i : i + args.block]) for g in (1, 2, 3)),
            ]
            for i in range(0, len(numbers), args.block)
        ],
        "cpu_ms_per_trial": {
            f"first {args.window}": round(1000 * sum(cpu[1 : args.window + 1]) / len(cpu[1 : args.window + 1]), 2),
            f"last {args.window}": round(1000 * sum(cpu[-args.window :]) / len(cpu[-args.window :]), 2),
        },
    }
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if profiler and args.out:
        profiler.dump_stats(str(Path(args.out).with_suffix(".pstats")))  # for pstats or snakeviz
    if windows:
        print(_growth(windows, args.windows))
    if profiler:
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(45)
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(30)
        print(stream.getvalue())
    return 0


def _skip(owner: str, name: str, attribute: str, value: object) -> Callable[[], None]:
    def skip() -> None:
        module = importlib.import_module(owner)
        setattr(getattr(module, name), attribute, value)

    return skip


_PARTS = {  # a part of lightopt's per-trial bookkeeping, and how to leave it out
    "board": _skip("lightopt.sweep.study", "StudyRun", "__call__", lambda self, study, trial: None),
    "drawing": _skip("lightopt.sweep.study", "StudyRun", "_plots_stale", lambda self: False),
    "progress": _skip("lightopt.sweep.study", "Progress", "__call__", lambda self, study, trial: None),
    "failures": _skip("lightopt.sweep.study", "FailureWatch", "__call__", lambda self, study, trial: None),
    "cleanup": _skip("lightopt.sweep.trial", "TrialCleanup", "__call__", lambda self, study, trial: None),
}


def _growth(windows: list[cProfile.Profile], bounds: list[int], top: int = 30) -> str:
    """The functions whose own CPU per trial grew most from the first window to the second, in ms."""
    trials = (bounds[1] - bounds[0], bounds[3] - bounds[2])
    tables = []
    for window, n in zip(windows, trials):
        stats = pstats.Stats(window).stats  # type: ignore[attr-defined]
        tables.append(
            {key: (calls / n, own * 1000 / n, total * 1000 / n) for key, (_, calls, own, total, _) in stats.items()}
        )
    lines = ["calls/trial  own ms/trial  cumulative ms/trial  (first window -> second)  function"]
    keys = set(tables[0]) | set(tables[1])
    grown = sorted(keys, key=lambda k: tables[1].get(k, (0, 0, 0))[1] - tables[0].get(k, (0, 0, 0))[1], reverse=True)
    for key in grown[:top]:
        (c0, o0, t0), (c1, o1, t1) = tables[0].get(key, (0, 0, 0)), tables[1].get(key, (0, 0, 0))
        name = f"{key[0].split('site-packages/')[-1]}:{key[1]}({key[2]})"
        lines.append(f"{c0:7.1f} -> {c1:7.1f}  {o0:7.2f} -> {o1:7.2f}  {t0:8.2f} -> {t1:8.2f}  {name}")
    lines.append("calls/trial (first window -> second), the functions whose calls per trial grew most:")
    by_calls = sorted(keys, key=lambda k: tables[1].get(k, (0, 0, 0))[0] - tables[0].get(k, (0, 0, 0))[0], reverse=True)
    for key in by_calls[:10]:
        (c0, _, _), (c1, _, _) = tables[0].get(key, (0, 0, 0)), tables[1].get(key, (0, 0, 0))
        lines.append(f"{c0:9.1f} -> {c1:9.1f}  {key[0].split('site-packages/')[-1]}:{key[1]}({key[2]})")
    totals = [sum(v[1] for v in table.values()) for table in tables]
    calls = [sum(v[0] for v in table.values()) for table in tables]
    lines.append(f"all: {totals[0]:.1f} -> {totals[1]:.1f} ms, {calls[0]:.0f} -> {calls[1]:.0f} calls per trial")
    return "\n".join(lines)


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
