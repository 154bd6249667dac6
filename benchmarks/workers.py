"""Trials per minute of ``lightopt sweep run --workers 2`` against ``--workers 1`` on the digits sweep.

The sweep is ``sweeps/digits_sgd.yaml`` shortened: ``--epochs`` epochs per trial (default 4
instead of 6), no pruner (so a trial's length does not depend on which trials finished before it),
one torch thread per worker. Both arms run the *same* trials: ``--trials`` parameter sets are
drawn once by a seeded random sampler over the file's search space and enqueued, in the same
order, into a fresh study of each arm (a journal file in a temporary directory); the worker loop
takes enqueued trials first. Each arm is one ``run_sweep(..., workers=N)`` call, timed from the
call to its return: the 2-worker arm includes starting its two child processes (each imports
torch and Lightning), so the ratio is what a user sees, not a best case. Rounds alternate the
order of the arms. Reported: trials per minute of each arm (median over rounds) and the ratio
2 workers / 1 worker with a paired bootstrap 95% interval (``_measure.paired_ratio``).

Usage::

    python benchmarks/workers.py [--trials N] [--epochs N] [--rounds N] [--quick] [--json out.json]

See ``benchmarks/README.md`` for the results and how to read them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _measure  # noqa: E402  (beside this script)

from lightopt.sweep import run_sweep  # noqa: E402
from lightopt.sweep.spec import parse  # noqa: E402
from lightopt.sweep.study import open_study  # noqa: E402

TARGET = 1.7
SWEEP = ROOT / "sweeps" / "digits_sgd.yaml"


def sweep_data(epochs: int, trials: int, log_dir: str, limit_train_batches: int | None) -> dict[str, Any]:
    """``sweeps/digits_sgd.yaml`` with ``epochs`` epochs, no pruner, ``trials`` trials, logs under ``log_dir``."""
    data = yaml.safe_load(SWEEP.read_text())
    data["study"].update(n_trials=trials, pruner={"name": "none"}, log_dir=log_dir, threads=1, storage=None)
    data["trainer"]["max_epochs"] = epochs
    if limit_train_batches is not None:
        data["trainer"]["limit_train_batches"] = limit_train_batches
    return data


def draw_params(data: dict[str, Any], trials: int, seed: int) -> list[dict[str, Any]]:
    """``trials`` parameter sets from a seeded random sampler over the sweep's search space."""
    sweep = parse(data)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    params = []
    for _ in range(trials):
        trial = study.ask()
        sweep.search.suggest(trial, sweep.run)
        params.append(dict(trial.params))
        study.tell(trial, 0.0)
    return params


def run_arm(data: dict[str, Any], params: list[dict[str, Any]], workers: int, root: str, tag: str) -> dict[str, Any]:
    """One arm: a fresh study with ``params`` enqueued, run by ``workers`` workers; wall time and states."""
    data = {**data, "study": {**data["study"], "log_dir": os.path.join(root, tag)}}
    sweep = parse(data)
    study, _ = open_study(sweep)
    for p in params:
        study.enqueue_trial(p)
    out = io.StringIO()
    start = time.perf_counter()
    result = run_sweep(sweep, workers=workers, out=out)
    wall = time.perf_counter() - start
    trials = result.study.trials
    ran = [t.params for t in sorted(trials, key=lambda t: t.number)]
    if len(trials) != len(params) or sorted(map(repr, ran)) != sorted(map(repr, params)):
        raise RuntimeError(f"arm {workers} worker(s) did not run the enqueued trials:\n{out.getvalue()}")
    states = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    return {"wall_s": wall, "trials_per_min": 60 * len(trials) / wall, "states": states}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/workers.py",
        description="Trials per minute of the shortened digits sweep with --workers 2 against --workers 1, "
        "the same trials in both, in the same run.",
    )
    parser.add_argument("--trials", type=int, default=None, help="trials per arm (default 200; 2 with --quick)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 4; 1 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of both arms (default 2; 1 with --quick)")
    parser.add_argument(
        "--limit-train-batches",
        type=int,
        default=None,
        help="training batches per epoch (default: all; 2 with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 one-epoch trials of 2 batches, 1 round")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the drawn parameter sets")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    trials = args.trials if args.trials is not None else (2 if args.quick else 200)
    epochs = args.epochs if args.epochs is not None else (1 if args.quick else 4)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    limit = args.limit_train_batches if args.limit_train_batches is not None else (2 if args.quick else None)
    _measure.check_at_least(
        parser, [("trials", trials, 1), ("epochs", epochs, 1), ("rounds", rounds, 1), ("limit-train-batches", limit, 1)]
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    info = _measure.machine_info(workers_compared=[1, 2])
    times: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="lightopt-workers-") as root:
        data = sweep_data(epochs, trials, root, limit)
        params = draw_params(data, trials, args.seed)
        for r in range(rounds):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                arm = run_arm(data, params, workers, root, f"r{r}w{workers}")
                times[workers].append(arm)
                print(
                    f"round {r + 1}/{rounds}, {workers} worker(s): {arm['wall_s']:.1f} s, "
                    f"{arm['trials_per_min']:.1f} trials/min, load average {_measure.loadavg()}",
                    file=sys.stderr,
                    flush=True,
                )
    info["loadavg_end"] = _measure.loadavg()
    rate = {w: np.array([a["trials_per_min"] for a in times[w]]) for w in times}
    ratio = _measure.paired_ratio(rate[2], rate[1], np.random.default_rng(args.seed))
    report = {
        "machine": info,
        "trials": trials,
        "epochs": epochs,
        "rounds": rounds,
        "limit_train_batches": limit,
        "arms": {str(w): {"trials_per_min": float(np.median(rate[w])), "rounds": times[w]} for w in times},
        "ratio": ratio,
        "target": TARGET,
    }
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def format_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    r = report["ratio"]
    verdict = "yes" if r["ratio_ci_low"] >= TARGET else "**no**" if r["ratio_ci_high"] < TARGET else "unclear"
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, Python {m['python']}; load average at "
        f"start / end {m['loadavg_start']} / {m['loadavg_end']}. {report['trials']} trials of "
        f"{report['epochs']} epoch(s) per arm, {report['rounds']} round(s).",
        "",
        "| workers | trials/min (median over rounds) | wall s per round |",
        "|---|---:|---|",
    ]
    for w, arm in report["arms"].items():
        walls = ", ".join(f"{a['wall_s']:.1f}" for a in arm["rounds"])
        lines.append(f"| {w} | {arm['trials_per_min']:.1f} | {walls} |")
    lines += [
        "",
        "| ratio | of medians [95% CI] | target |",
        "|---|---|---|",
        f"| 2 workers / 1 worker | {r['ratio']:.2f} [{r['ratio_ci_low']:.2f}, {r['ratio_ci_high']:.2f}] "
        f"| ≥ {TARGET}: {verdict} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
