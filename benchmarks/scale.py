"""A sweep's own cost per trial as its study grows: lightopt against Optuna alone, up to 10,000 trials.

Zero-cost trials: lightopt's real objective and worker loop with a *stub fit* (no Lightning
Trainer is built; the stub reports :data:`ROUNDS` validation values through the sweep's
pruning callback exactly as a fit's validation rounds would, and returns). Everything else of
``lightopt sweep run`` runs as a user gets it: the sweep file is read, each trial records its
seed, full config and log directory, writes its HParams session into TensorBoard, the worker
claims it under the host lock and checks for dead workers and retries, and after it the progress
line, the failure watch, TensorBoard's study run (and its plots, on their schedule) and the
memory cleanup run. The time of a real fit is what ``benchmarks/trial_overhead.py`` measures.

Optuna alone: ``study.optimize`` with an objective that suggests the same three parameters under
the same names and reports the same values (the same function of the parameters) at the same
steps, asking the pruner after each; the same sampler (with the same seed), pruner and kind of
storage: a journal file, or a database on a real PostgreSQL 15 on 127.0.0.1 (started as the tests
start it, :mod:`tests.sweep.postgres`). On PostgreSQL lightopt's storage runs Optuna's heartbeat
(its crash recovery across machines); Optuna alone gets a plain ``RDBStorage``.

Each arm runs in fresh processes (one per worker; several workers share one study, as several
machines do). Each process stamps every trial's start: the per-trial time at N trials is the wall
time between the starts of trials N - w and N, divided by w (w = N/10, at least 20), for all
workers together. CPU time counts each process and its ended children: the drawing processes of
the study's plots (:class:`~lightopt.sweep.study.Drawing`), whose CPU and peak memory are also
reported per drawing. Also recorded: each process's resident memory at those points, the storage's
size, the TensorBoard logs' size, and the time ``sweep run`` takes after its last trial (summary,
final plots). Configurations run one after the other and each is written to ``--out`` as soon as
it ends, with the machine.

``--sampler-scale`` measures the samplers alone instead: the time of one ``study.ask`` with the
three parameters on an in-memory study that already holds N finished trials, for TPE with
Optuna's defaults (lightopt's default), TPE ``multivariate``, TPE ``multivariate`` +
``constant_liar``, random and CMA-ES.

Usage::

    python benchmarks/scale.py --trials 500                     # smoke: journal, 1 and 4 workers
    python benchmarks/scale.py --trials 10000 --storage journal --workers 1
    python benchmarks/scale.py --trials 2000 --storage postgres --workers 4 --sampler tpe
    python benchmarks/scale.py --sampler-scale --trials 10000

See ``benchmarks/README.md`` for the results and how to read them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import math
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _measure  # noqa: E402  (beside this script)
import optuna  # noqa: E402

ROUNDS = 4  # validation rounds a stub trial reports
SEED = 0
PRUNER = {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 1}
SPACE = {  # the sweep's search block; Optuna alone suggests the same
    "optimizer.init_args.lr": {"low": 1.0e-3, "high": 1.0, "log": True},
    "optimizer.init_args.momentum": {"low": 0.0, "high": 0.99},
    "data.init_args.batch_size": {"choices": [16, 32, 64, 128, 256]},
}
TARGET_MS = 20.0  # lightopt's per-trial time minus Optuna's


def value(lr: float, momentum: float, batch_size: int, step: int) -> float:
    """The validation loss a stub trial reports at ``step``: a smooth bowl in the parameters, falling with steps."""
    bowl = (math.log10(lr) + 1.5) ** 2 + 4 * (momentum - 0.9) ** 2 + 0.1 * abs(math.log2(batch_size / 64))
    return bowl + 1.0 / step


def sweep_data(log_dir: str, trials: int, sampler: str) -> dict[str, Any]:
    data = {
        "study": {
            "name": "scale",
            "direction": "minimize",
            "metric": "val_loss",
            "n_trials": trials,
            "seed": SEED,
            "threads": 1,
            "sampler": {"name": sampler, "seed": SEED},
            "pruner": dict(PRUNER),
            "log_dir": log_dir,
        },
        "model": {"class_path": "examples.digits.DigitsMLP", "init_args": {"hidden": 16}},
        "data": {"class_path": "examples.digits.DigitsDataModule", "init_args": {"batch_size": 64}},
        "trainer": {"max_epochs": ROUNDS, "enable_checkpointing": False, "accelerator": "cpu"},
        "optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}},
        "search": SPACE,
    }
    return data


def _cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended: the plots' drawing processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Stamps:
    """Each trial's start (wall clock) and, every so often, this process's resident memory."""

    def __init__(self) -> None:
        self.starts: list[tuple[float, int]] = []
        self.cpu: list[float] = []  # this process's CPU time (all its threads), and its ended children's, at each start
        self.memory: list[tuple[int, float]] = []
        self.draws: list[tuple[int, float]] = []  # (trials started before it ended, CPU seconds) of each plot drawing
        self.drawing_peaks: list[float | None] = []  # each drawing process's peak memory, MiB

    def __call__(self, number: int) -> None:
        self.starts.append((time.time(), number))
        self.cpu.append(_cpu_s())
        if len(self.starts) % 100 == 1:
            self.memory.append((len(self.starts), round(_rss_mib(), 1)))


def _stub_fit(stamps: Stamps):
    """``fit_trial`` without Lightning: reports ROUNDS values through the pruning callback, like a fit would."""

    def fit_trial(config, seed, pruning, directory, name, callbacks=(), ckpt_path=None, checkpoints=False, cli=None):
        stamps(int(name.rsplit("_", 1)[1]))
        pruning._set_up = True  # as its setup() in a fit: this process decides (no read of the trial back)
        lr, momentum = config["optimizer"]["init_args"]["lr"], config["optimizer"]["init_args"]["momentum"]
        batch = config["data"]["init_args"]["batch_size"]
        step = 0
        for step in range(1, ROUNDS + 1):
            loss = value(lr, momentum, batch, step)
            pruning.history.append((step, loss))
            pruning.best = loss if pruning.best is None else min(pruning.best, loss)
            pruning.trial.report(loss, step)
            if pruning.trial.should_prune():  # as PruningCallback decides: the step kept, in the trial unless deferred
                if not getattr(pruning, "defer_pruned", False):
                    pruning.trial.set_user_attr("pruned_at", step)
                pruning._pruned = step
                break
        return SimpleNamespace(trainer=SimpleNamespace(current_epoch=step, global_step=step))

    return fit_trial


def record_drawings(run_class: Any, stamps: Stamps) -> None:
    """Stamp each drawing of ``run_class`` (``StudyRun``) as it is collected: its CPU joins os.times then."""
    add = run_class._add

    def recorded(self, result):
        stamps.draws.append((len(stamps.starts), result.cpu_s))
        stamps.drawing_peaks.append(result.peak_mib)
        add(self, result)

    run_class._add = recorded


def _objective(stamps: Stamps):
    def objective(trial: optuna.Trial) -> float:
        stamps(trial.number)
        lr = trial.suggest_float("optimizer.init_args.lr", 1.0e-3, 1.0, log=True)
        momentum = trial.suggest_float("optimizer.init_args.momentum", 0.0, 0.99)
        batch = trial.suggest_categorical("data.init_args.batch_size", [16, 32, 64, 128, 256])
        best = math.inf
        for step in range(1, ROUNDS + 1):
            loss = value(lr, momentum, batch, step)
            best = min(best, loss)
            trial.report(loss, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best

    return objective


def _sampler(name: str) -> optuna.samplers.BaseSampler:
    return {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[name](seed=SEED)


def _worker(arm: str, index: int, trials: int, sampler: str, storage: str, log_dir: str, result: str) -> None:
    """One process of an arm: runs trials until the study has ``trials``; writes its stamps to ``result``."""
    stamps = Stamps()
    started = time.time()
    if arm == "lightopt":
        from lightopt.sweep import Objective, run_sweep
        from lightopt.sweep.spec import parse
        from lightopt.sweep.study import StudyRun

        Objective.fit_trial = staticmethod(_stub_fit(stamps))
        record_drawings(StudyRun, stamps)
        sweep = parse(sweep_data(log_dir, trials, sampler), "scale.yaml")
        with open(os.devnull, "w") as out:
            run_sweep(sweep, storage=storage, out=out)
        last = stamps.starts[-1][0] if stamps.starts else started
    else:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if "://" in storage:
            opened: Any = optuna.storages.RDBStorage(storage)
        else:
            opened = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
        sampler_object = _sampler(sampler)
        if index:
            sampler_object.reseed_rng()
        study = optuna.create_study(
            study_name="scale",
            storage=opened,
            direction="minimize",
            load_if_exists=True,
            sampler=sampler_object,
            pruner=optuna.pruners.MedianPruner(
                n_startup_trials=PRUNER["n_startup_trials"], n_warmup_steps=PRUNER["n_warmup_steps"]
            ),
        )
        stop = optuna.study.MaxTrialsCallback(trials, states=None)  # every trial counts, as in lightopt
        study.optimize(_objective(stamps), callbacks=[stop], gc_after_trial=False)
        last = stamps.starts[-1][0] if stamps.starts else started
    ended = time.time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(result).write_text(
        json.dumps(
            {
                "starts": stamps.starts,
                "cpu": stamps.cpu,
                "draws": stamps.draws,
                "drawing_peaks_mib": stamps.drawing_peaks,
                "memory": stamps.memory,
                "after_last_s": ended - last,
                "peak_rss_mib": round(peak, 1),
            }
        )
    )


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run_arm(
    arm: str, trials: int, workers: int, sampler: str, storage_kind: str, server: Any, scratch_dir: str | None = None
) -> dict[str, Any]:
    """One arm in ``workers`` fresh processes on a fresh storage; its per-trial times, memory and sizes."""
    with tempfile.TemporaryDirectory(prefix=f"scale-{arm}-", dir=scratch_dir) as scratch:
        log_dir = str(Path(scratch) / "runs")
        if storage_kind == "postgres":
            database = server.new_database()
            storage = server.url(database)
        else:
            storage = str(Path(scratch) / "study.journal")
        context = multiprocessing.get_context("spawn")
        results = [str(Path(scratch) / f"worker_{i}.json") for i in range(workers)]
        started = time.time()
        processes = [
            context.Process(target=_worker, args=(arm, i, trials, sampler, storage, log_dir, results[i]))
            for i in range(workers)
        ]
        for process in processes:
            process.start()
            if storage_kind == "postgres" and process is processes[0]:
                time.sleep(3)  # the first one creates the tables and the study
        for process in processes:
            process.join()
        wall = time.time() - started
        failed = [p.exitcode for p in processes if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"{arm}: worker exit codes {failed}")
        per_worker = [json.loads(Path(r).read_text()) for r in results]
        if storage_kind == "postgres":
            storage_bytes = server.database_size(database)
        else:
            storage_bytes = Path(storage).stat().st_size
        logs = Path(log_dir) / "scale"
        tensorboard_bytes = _size(logs)  # the trial runs and the study run (the journal is elsewhere)
    starts = sorted(t for w in per_worker for t, _ in w["starts"])
    return {
        "arm": arm,
        "trials_run": len(starts),
        "wall_s": round(wall, 2),
        "per_trial_ms": per_trial_ms(starts, trials),
        "cpu_per_trial_ms": cpu_per_trial_ms(per_worker, trials),
        "cpu_per_trial_by_segment_ms": cpu_by_segment_ms(per_worker, trials),
        "cpu_per_trial_by_segment_without_plots_ms": cpu_by_segment_ms(per_worker, trials, without_draws=True),
        "plot_drawings": [[[n, round(s, 2)] for n, s in w.get("draws", [])] for w in per_worker],
        "drawing_peak_rss_mib": [[p and round(p, 1) for p in w.get("drawing_peaks_mib", [])] for w in per_worker],
        "memory_mib": [w["memory"] for w in per_worker],
        "peak_rss_mib": [w["peak_rss_mib"] for w in per_worker],
        "after_last_trial_s": [round(w["after_last_s"], 2) for w in per_worker],
        "storage_bytes": storage_bytes,
        "tensorboard_bytes": tensorboard_bytes,
    }


def checkpoints(trials: int) -> list[int]:
    """The trial counts reported: 100, 1,000, 10,000 (those reached) and the last."""
    points = [n for n in (100, 300, 1000, 3000, 10000) if n <= trials]
    return points if trials in points else [*points, trials]


def per_trial_ms(starts: list[float], trials: int) -> dict[str, float]:
    """Wall time per trial around each checkpoint N: (start of trial N - start of trial N - w) / w, w = N/10 (>= 20)."""
    out = {}
    for n in checkpoints(trials):
        if n > len(starts):
            continue
        w = max(20, n // 10)
        if n - w < 1:
            continue
        out[str(n)] = round(1000 * (starts[n - 1] - starts[n - 1 - w]) / w, 2)
    return out


def cpu_per_trial_ms(per_worker: list[dict[str, Any]], trials: int) -> dict[str, float]:
    """The workers' own CPU time per trial around each checkpoint (the database server's is not in it).

    Less sensitive than wall time to other jobs on a shared machine. Worker processes' CPU seconds
    between the starts of their trials in the window, summed, over the trials started in it.
    """
    out = {}
    for n in checkpoints(trials):
        w = max(20, n // 10)
        if n - w < 1:
            continue
        used = started = 0
        for worker in per_worker:
            inside = [c for (_, number), c in zip(worker["starts"], worker["cpu"]) if n - w <= number < n]
            if len(inside) > 1:
                used += inside[-1] - inside[0]
                started += len(inside) - 1
        if started:
            out[str(n)] = round(1000 * used / started, 2)
    return out


def segments(trials: int) -> list[tuple[int, int]]:
    """The spans of trials between consecutive checkpoints, the first from trial 10 (after the first trials' set-up)."""
    bounds = [10, *checkpoints(trials)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def cpu_by_segment_ms(per_worker: list[dict[str, Any]], trials: int, without_draws: bool = False) -> dict[str, float]:
    """The workers' CPU time per trial over each span of :func:`segments` ("10-100", "100-300", ...).

    Every trial of the span counts, not a window of N/10 before each checkpoint: on a shared machine
    a window of 20 or 30 trials moves by 10 to 20 ms from run to run, a span of 200 by a few.
    ``without_draws``: less the CPU of the plot drawings made between the span's first and last
    trial start (lightopt's arm records them), i.e. the per-trial bookkeeping alone.
    """
    out = {}
    for a, b in segments(trials):
        used = started = 0
        for worker in per_worker:
            kept = [
                (i, c) for i, ((_, number), c) in enumerate(zip(worker["starts"], worker["cpu"])) if a <= number < b
            ]
            if len(kept) > 1:
                used += kept[-1][1] - kept[0][1]
                started += len(kept) - 1
                if without_draws:  # a drawing stamped k ran after the k-th start
                    first, last = kept[0][0] + 1, kept[-1][0]
                    used -= sum(seconds for k, seconds in worker.get("draws", []) if first <= k <= last)
        if started:
            out[f"{a}-{b}"] = round(1000 * used / started, 2)
    return out


def _value_of(params: dict[str, Any]) -> float:
    return value(
        params["optimizer.init_args.lr"],
        params["optimizer.init_args.momentum"],
        params["data.init_args.batch_size"],
        ROUNDS,
    )


def sampler_scale(sizes: list[int], repeats: int, save: Any = None) -> list[dict[str, Any]]:
    """Milliseconds of one ``study.ask`` with the three parameters after N finished trials, per sampler."""
    import random

    from optuna.distributions import CategoricalDistribution, FloatDistribution

    space = {
        "optimizer.init_args.lr": FloatDistribution(1e-3, 1.0, log=True),
        "optimizer.init_args.momentum": FloatDistribution(0.0, 0.99),
        "data.init_args.batch_size": CategoricalDistribution([16, 32, 64, 128, 256]),
    }
    samplers = {
        "tpe (Optuna's defaults; lightopt's default)": lambda: optuna.samplers.TPESampler(seed=SEED),
        "tpe multivariate": lambda: optuna.samplers.TPESampler(seed=SEED, multivariate=True),
        "tpe multivariate constant_liar": lambda: optuna.samplers.TPESampler(
            seed=SEED, multivariate=True, constant_liar=True
        ),
        "random": lambda: optuna.samplers.RandomSampler(seed=SEED),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=SEED, warn_independent_sampling=False),
        "cmaes (batch size as an independent random choice)": lambda: optuna.samplers.CmaEsSampler(
            seed=SEED, warn_independent_sampling=False
        ),
    }
    if importlib.util.find_spec("cmaes") is None:  # CmaEsSampler needs the `cmaes` package
        print("  cmaes: skipped, the `cmaes` package is not installed", flush=True)
        samplers = {name: make for name, make in samplers.items() if not name.startswith("cmaes")}
    rng = random.Random(SEED)
    history = []
    for _number in range(max(sizes)):
        params = {
            "optimizer.init_args.lr": 10 ** rng.uniform(-3, 0),
            "optimizer.init_args.momentum": rng.uniform(0, 0.99),
            "data.init_args.batch_size": rng.choice([16, 32, 64, 128, 256]),
        }
        history.append(optuna.trial.create_trial(value=_value_of(params), params=params, distributions=space))
    rows = []
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # QMCSampler's
    for name, make in samplers.items():
        for n in sizes:
            study = optuna.create_study(sampler=make())
            study.add_trials(history[:n])
            for _ in range(4):  # running trials, as other workers leave them (constant_liar uses them)
                study.ask(space)
            times = []
            for _ in range(repeats):
                begin = time.perf_counter()
                trial = study.ask(space)
                times.append(time.perf_counter() - begin)
                study.tell(trial, _value_of(trial.params))
            times.sort()
            rows.append(
                {
                    "sampler": name,
                    "trials": n,
                    "ask_ms_median": round(1000 * times[len(times) // 2], 2),
                    "ask_ms_min": round(1000 * times[0], 2),
                }
            )
            print(f"  {name:50s} {n:6d} trials: {rows[-1]['ask_ms_median']:8.2f} ms per ask", flush=True)
            if save is not None:
                save(rows)
    return rows


def _server():
    from tests.sweep.postgres import start_postgres

    server = start_postgres()

    def database_size(name: str) -> int:
        import sqlalchemy

        engine = sqlalchemy.create_engine(
            f"postgresql://postgres@/postgres?host={server.base}&port={server.port}", poolclass=sqlalchemy.pool.NullPool
        )
        try:
            with engine.connect() as connection:
                return int(connection.exec_driver_sql(f"SELECT pg_database_size('{name}')").scalar())
        finally:
            engine.dispose()

    server.database_size = database_size  # type: ignore[attr-defined]
    version = subprocess.run([server.pg_ctl, "--version"], capture_output=True, text=True).stdout.strip()
    return server, version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=500, help="trials per study (the largest size measured)")
    parser.add_argument("--storage", choices=["journal", "postgres", "both"], default="journal")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4], help="worker counts to run")
    parser.add_argument(
        "--sampler",
        choices=["random", "tpe"],
        default="random",
        help="the sampler of both arms (random: a constant cost, so the difference is lightopt's)",
    )
    parser.add_argument("--sampler-scale", action="store_true", help="measure the samplers alone instead")
    parser.add_argument("--repeats", type=int, default=20, help="asks per sampler and size (--sampler-scale)")
    parser.add_argument(
        "--scratch",
        default=None,
        help="directory for the journal files and logs (default: the system's temp directory; "
        "/dev/shm takes the disk's fsync out of the measurement)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write (default: stdout only)")
    args = parser.parse_args(argv)
    _measure.check_at_least(
        parser, [("trials", args.trials, 30), ("repeats", args.repeats, 1), ("workers", min(args.workers), 1)]
    )
    machine = _measure.machine_info(optuna=optuna.__version__)
    report: dict[str, Any] = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "runs": []}

    def save() -> None:
        report["machine"]["loadavg_end"] = _measure.loadavg()
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1))

    if args.sampler_scale:
        sizes = [n for n in (100, 1000, 3000, 10000) if n <= args.trials]
        report["samplers"] = []

        def keep(rows: list[dict[str, Any]]) -> None:
            report["samplers"] = rows
            save()

        sampler_scale(sizes, args.repeats, keep)
        return 0
    kinds = ["journal", "postgres"] if args.storage == "both" else [args.storage]
    server = None
    try:
        for kind in kinds:
            if kind == "postgres" and server is None:
                server, version = _server()
                report["machine"]["postgres"] = version
            for workers in args.workers:
                row: dict[str, Any] = {
                    "storage": kind,
                    "workers": workers,
                    "sampler": args.sampler,
                    "trials": args.trials,
                    "scratch": args.scratch or tempfile.gettempdir(),
                }
                for arm in ("optuna", "lightopt"):
                    print(f"{kind}, {workers} worker(s), {args.sampler}: {arm} ...", flush=True)
                    row[arm] = run_arm(arm, args.trials, workers, args.sampler, kind, server, args.scratch)
                    print(
                        f"  per-trial ms {row[arm]['per_trial_ms']}, cpu {row[arm]['cpu_per_trial_ms']}, "
                        f"wall {row[arm]['wall_s']} s",
                        flush=True,
                    )
                for key in (
                    "per_trial_ms",
                    "cpu_per_trial_ms",
                    "cpu_per_trial_by_segment_ms",
                    "cpu_per_trial_by_segment_without_plots_ms",
                ):
                    row[f"difference_{key}"] = {
                        n: round(row["lightopt"][key][n] - ms, 2)
                        for n, ms in row["optuna"][key].items()
                        if n in row["lightopt"][key]
                    }
                print(
                    f"  lightopt - optuna, ms per trial: wall {row['difference_per_trial_ms']}, cpu "
                    f"{row['difference_cpu_per_trial_ms']}, cpu by span "
                    f"{row['difference_cpu_per_trial_by_segment_ms']} "
                    f"(target <= {TARGET_MS})",
                    flush=True,
                )
                report["runs"].append(row)
                save()
    finally:
        if server is not None:
            server.stop()
    save()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
