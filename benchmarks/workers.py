"""Wall time of ``lightopt sweep run --workers 2`` against ``--workers 1`` on the shipped sweeps, as a user runs them.

Jobs (``--jobs``, default both): the README's main job ``sweeps/digits_sgd.yaml`` (30 trials of 6
epochs as shipped) and ``sweeps/digits_lr.yaml`` (20 trials of 8 epochs). ``--trials`` and
``--epochs`` cut them (the report says so). Changed from the files: no pruner (so a trial's length
does not depend on which trials finished before it) and the logs in a temporary directory; one
torch thread per worker, as the files say. Both arms run the *same* trials: ``--trials`` parameter
sets are drawn once per job by a seeded random sampler over the file's search space and enqueued, in
the same order, into a fresh study of each arm (a journal file); the worker loop takes enqueued
trials first.

Each arm is one ``python -m lightopt sweep run FILE --workers N`` process, timed from its start to
its exit: both arms include the command's start-up (importing torch and Lightning), and the
2-worker arm starting its child, so the ratio is what a user sees. ``--late-start`` adds a third
arm: 2 workers whose child starts only when the sweep does (``LIGHTOPT_PRESTART=0``, as before
issue 15). Rounds alternate the order of the arms. Reported per job: wall seconds and trials per
minute of each arm (median over rounds), how many worker processes ran trials, and the ratio
2 workers / 1 worker of trials per minute with a paired bootstrap 95% interval
(``_measure.paired_ratio``).

Usage::

    python benchmarks/workers.py [--jobs digits_sgd digits_lr] [--trials N] [--epochs N] [--rounds N]
                                 [--late-start] [--quick] [--json out.json]

See ``benchmarks/README.md`` for the results and how to read them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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

from lightopt.sweep.spec import parse  # noqa: E402
from lightopt.sweep.study import PRESTART_ENV, open_study  # noqa: E402

TARGET = 1.7
JOBS = {"digits_sgd": ROOT / "sweeps" / "digits_sgd.yaml", "digits_lr": ROOT / "sweeps" / "digits_lr.yaml"}
SWEEP = JOBS["digits_sgd"]
ARMS = {"1": (1, True), "2": (2, True), "2 late": (2, False)}  # name: (workers, children started with the command)


def sweep_data(
    epochs: int | None, trials: int | None, log_dir: str, limit_train_batches: int | None, file: Path = SWEEP
) -> dict[str, Any]:
    """The sweep ``file`` with ``epochs`` epochs, ``trials`` trials (None: as shipped), no pruner, logs in log_dir."""
    data = yaml.safe_load(file.read_text())
    data["study"].update(pruner={"name": "none"}, log_dir=log_dir, threads=1, storage=None)
    if trials is not None:
        data["study"]["n_trials"] = trials
    if epochs is not None:
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


def run_arm(
    data: dict[str, Any], params: list[dict[str, Any]], workers: int, root: str, tag: str, prestart: bool = True
) -> dict[str, Any]:
    """One arm: a fresh study with ``params`` enqueued, run by ``lightopt sweep run --workers N``; wall time, states."""
    data = {**data, "study": {**data["study"], "log_dir": os.path.join(root, tag)}}
    file = Path(root) / f"{tag}.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    sweep = parse(data, str(file))
    study, _ = open_study(sweep)
    for p in params:
        study.enqueue_trial(p)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        PRESTART_ENV: "1" if prestart else "0",
    }
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lightopt", "sweep", "run", str(file), "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"arm {workers} worker(s) exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    trials = open_study(sweep)[0].trials
    ran = [t.params for t in sorted(trials, key=lambda t: t.number)]
    if len(trials) != len(params) or sorted(map(repr, ran)) != sorted(map(repr, params)):
        raise RuntimeError(f"arm {workers} worker(s) did not run the enqueued trials:\n{done.stdout}")
    states = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    pids = {t.user_attrs.get("worker", {}).get("pid") for t in trials}
    return {"wall_s": wall, "trials_per_min": 60 * len(trials) / wall, "states": states, "processes": len(pids)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/workers.py",
        description="Wall time of `lightopt sweep run --workers 2` against `--workers 1` on the shipped sweeps, "
        "the same trials in both, in the same run.",
    )
    parser.add_argument(
        "--jobs",
        nargs="+",
        choices=sorted(JOBS),
        default=None,
        help="the sweeps (default both: digits_sgd, the main job, and digits_lr)",
    )
    parser.add_argument("--trials", type=int, default=None, help="trials per arm (default: as shipped; 2 with --quick)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per trial (default: as shipped; 1 with --quick)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds of all arms (default 2; 1 with --quick)")
    parser.add_argument(
        "--limit-train-batches",
        type=int,
        default=None,
        help="training batches per epoch (default: all; 2 with --quick)",
    )
    parser.add_argument(
        "--late-start",
        action="store_true",
        help="also 2 workers whose child starts with the sweep, not the command (LIGHTOPT_PRESTART=0)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 one-epoch trials of 2 batches, 1 round")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the drawn parameter sets")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    trials = args.trials if args.trials is not None else (2 if args.quick else None)
    epochs = args.epochs if args.epochs is not None else (1 if args.quick else None)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    limit = args.limit_train_batches if args.limit_train_batches is not None else (2 if args.quick else None)
    _measure.check_at_least(
        parser, [("trials", trials, 1), ("epochs", epochs, 1), ("rounds", rounds, 1), ("limit-train-batches", limit, 1)]
    )
    arms = [name for name in ARMS if args.late_start or name != "2 late"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    info = _measure.machine_info(workers_compared=[1, 2])
    jobs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lightopt-workers-") as root:
        for job in args.jobs or list(JOBS):
            data = sweep_data(epochs, trials, root, limit, JOBS[job])
            n, n_epochs = data["study"]["n_trials"], data["trainer"]["max_epochs"]
            params = draw_params(data, n, args.seed)
            times: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
            for r in range(rounds):
                for name in arms if r % 2 == 0 else arms[::-1]:
                    workers, prestart = ARMS[name]
                    arm = run_arm(data, params, workers, root, f"{job}-r{r}w{name.replace(' ', '')}", prestart)
                    times[name].append(arm)
                    print(
                        f"{job}, round {r + 1}/{rounds}, {name} worker(s): {arm['wall_s']:.1f} s, "
                        f"{arm['trials_per_min']:.1f} trials/min, {arm['processes']} process(es) ran trials, "
                        f"load average {_measure.loadavg()}",
                        file=sys.stderr,
                        flush=True,
                    )
            rate = {name: np.array([a["trials_per_min"] for a in times[name]]) for name in arms}
            ratios = {
                name: _measure.paired_ratio(rate[name], rate["1"], np.random.default_rng(args.seed))
                for name in arms
                if name != "1"
            }
            jobs[job] = {
                "file": str(JOBS[job].relative_to(ROOT)),
                "trials": n,
                "epochs": n_epochs,
                "as_shipped": trials is None and epochs is None and limit is None,
                "arms": {
                    name: {"trials_per_min": float(np.median(rate[name])), "rounds": times[name]} for name in arms
                },
                "ratio": ratios["2"],
                "ratios": ratios,
            }
    info["loadavg_end"] = _measure.loadavg()
    report = {"machine": info, "rounds": rounds, "limit_train_batches": limit, "jobs": jobs, "target": TARGET}
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def format_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, Python {m['python']}; load average at "
        f"start / end {m['loadavg_start']} / {m['loadavg_end']}. {report['rounds']} round(s); each arm is one "
        f"`lightopt sweep run` process, start-up included."
    ]
    for result in report["jobs"].values():
        cut = "as shipped" if result["as_shipped"] else "cut"
        lines += [
            "",
            f"{result['file']}: {result['trials']} trials of {result['epochs']} epoch(s) ({cut}; no pruner)",
            "",
            "| workers | trials/min (median over rounds) | wall s per round | processes that ran trials |",
            "|---|---:|---|---|",
        ]
        for name, arm in result["arms"].items():
            walls = ", ".join(f"{a['wall_s']:.1f}" for a in arm["rounds"])
            processes = ", ".join(str(a["processes"]) for a in arm["rounds"])
            label = "2, child started with the sweep" if name == "2 late" else name
            lines.append(f"| {label} | {arm['trials_per_min']:.1f} | {walls} | {processes} |")
        lines += ["", "| ratio | of medians [95% CI] | target |", "|---|---|---|"]
        for name, r in result["ratios"].items():
            verdict = "yes" if r["ratio_ci_low"] >= TARGET else "**no**" if r["ratio_ci_high"] < TARGET else "unclear"
            label = "2 workers / 1 worker" if name == "2" else "2 workers (child started with the sweep) / 1 worker"
            lines.append(
                f"| {label} | {r['ratio']:.2f} [{r['ratio_ci_low']:.2f}, {r['ratio_ci_high']:.2f}] "
                f"| ≥ {TARGET}: {verdict} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
