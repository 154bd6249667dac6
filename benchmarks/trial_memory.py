"""Resident memory of one worker process over many short sweep trials: does it grow without bound?

Runs ``--trials`` (200) trials of the tiny digits sweep of the tests (``tests/sweep/helpers.sweep_dict``:
an MLP with 16 hidden units, 4 batches, 2 epochs, 1 torch thread, TensorBoard logs, the default
journal storage) in one process, as ``lightopt sweep run`` does: ``open_study``, the sweep's
``Objective`` and ``study.optimize`` with the runner's callbacks. After each trial it records
the resident set size (``/proc/self/statm``), the number of ``lightning.Trainer`` and
``LightningModule`` objects still in memory (weak references: alive or garbage not yet collected),
and the trial's wall time. Each setting runs in a fresh subprocess:

* ``plain``: ``gc_after_trial=False`` and nothing else (``run_sweep`` before ``TrialCleanup``);
* ``gc_after_trial``: Optuna's ``gc_after_trial=True``, a full ``gc.collect()`` after every trial;
* ``runner``: as ``run_sweep`` runs trials now: ``gc_after_trial=False`` and
  :class:`lightopt.sweep.trial.TrialCleanup` (freeze the heap, collect the last trial's garbage).

``--fail-every K`` makes every K-th trial raise in its first training step, to include failed
trials. Reported per setting: RSS after the first trial and at the end, the peak, the slope of
a straight line fitted over the second half of the trials (KiB per trial), the largest count of
live Trainers, and the median trial time. Writes ``trial_memory.csv`` (one row per trial and
setting) and ``trial_memory.png`` (RSS against trial number) to ``--out`` (default ``benchmarks/results/``).

Usage::

    python benchmarks/trial_memory.py [--trials 200] [--fail-every 0] [--out DIR] [--only runner]

See ``benchmarks/README.md`` for the results.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# setting -> (Optuna's gc_after_trial, lightopt's TrialCleanup)
SETTINGS = {"plain": (False, False), "gc_after_trial": (True, False), "runner": (False, True)}


def rss_mib() -> float:
    """The resident set size of this process in MiB, from ``/proc/self/statm``."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def track(cls: type) -> weakref.WeakSet:
    """A set that holds (weakly) every instance of ``cls`` made from now on: its length is how many are alive.

    Weak references see what ``gc.get_objects()`` misses: objects moved to the permanent generation by
    ``gc.freeze()``, which ``TrialCleanup`` uses.
    """
    instances: weakref.WeakSet = weakref.WeakSet()
    init = cls.__init__

    @functools.wraps(init)  # keeps the signature, which sweep files are checked against
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        instances.add(self)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return instances


def run_setting(name: str, trials: int, fail_every: int) -> list[dict[str, Any]]:
    """Run ``trials`` trials in this process with the setting ``name``; one record per trial."""
    sys.path.insert(0, str(ROOT))
    import lightning
    import optuna

    from lightopt.sweep.spec import parse
    from lightopt.sweep.store import optuna_quiet, study_dir
    from lightopt.sweep.study import FailureWatch, open_study
    from lightopt.sweep.trial import Objective, TrialCleanup, TrialFailed, torch_threads
    from tests.sweep.helpers import sweep_dict

    rows: list[dict[str, Any]] = []
    trainer_set, module_set = track(lightning.Trainer), track(lightning.LightningModule)
    with tempfile.TemporaryDirectory() as tmp:
        data = sweep_dict(Path(tmp), n_trials=trials, stop_after_same_failures=0)
        if fail_every:
            data["model"]["class_path"] = "tests.sweep.helpers.BreakableMLP"
            data["search"]["model.init_args.broken"] = {"choices": [False, True]}
        sweep = parse(data, "trial_memory.yaml")
        start = [time.perf_counter()]

        def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            trainers, modules = len(trainer_set), len(module_set)
            rows.append(
                {
                    "setting": name,
                    "trial": trial.number,
                    "state": trial.state.name,
                    "rss_mib": round(rss_mib(), 2),
                    "live_trainers": trainers,
                    "live_modules": modules,
                    "seconds": round(time.perf_counter() - start[0], 4),
                }
            )
            start[0] = time.perf_counter()

        class Broken(optuna.samplers.RandomSampler):  # every fail_every-th trial breaks, whatever the sampler draws
            def sample_independent(self, study, trial, param_name, distribution):
                if param_name == "model.init_args.broken":
                    return bool(fail_every) and (trial.number + 1) % fail_every == 0
                return super().sample_independent(study, trial, param_name, distribution)

        gc_after_trial, cleanup = SETTINGS[name]
        callbacks = [FailureWatch(0), *([TrialCleanup()] if cleanup else []), record]
        with optuna_quiet(), torch_threads(1), callbacks[1] if cleanup else contextlib.nullcontext():
            study, _ = open_study(sweep, sampler=Broken(seed=0))
            study.optimize(
                Objective(sweep, study_dir(sweep.study.log_dir, sweep.study.name)),
                n_trials=trials,
                catch=(TrialFailed,),
                callbacks=callbacks,
                gc_after_trial=gc_after_trial,
            )
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    rss = np.array([r["rss_mib"] for r in rows])
    half = len(rows) // 2
    x = np.arange(half, len(rows))
    slope = float(np.polyfit(x, rss[half:], 1)[0]) * 1024 if len(rows) - half >= 2 else float("nan")
    return {
        "trials": len(rows),
        "failed": sum(r["state"] == "FAIL" for r in rows),
        "rss_first_mib": float(rss[0]),
        "rss_last_mib": float(rss[-1]),
        "rss_peak_mib": float(rss.max()),
        "slope_second_half_kib_per_trial": round(slope, 1),
        "max_live_trainers": max(r["live_trainers"] for r in rows),
        "live_trainers_at_end": rows[-1]["live_trainers"],
        "median_trial_s": float(np.median([r["seconds"] for r in rows])),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == name]
        ax.plot([r["trial"] for r in mine], [r["rss_mib"] for r in mine], label=name)
    ax.set_xlabel("trial")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title("Resident memory of one worker over short sweep trials")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--fail-every", type=int, default=0, help="every K-th trial raises (0: none)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="where the CSV and PNG go")
    parser.add_argument("--only", choices=list(SETTINGS), help="run only this setting")
    parser.add_argument("--json", help=argparse.SUPPRESS)  # a child's rows go here
    args = parser.parse_args(argv)
    if args.only and args.json:
        rows = run_setting(args.only, args.trials, args.fail_every)
        Path(args.json).write_text(json.dumps(rows))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name in [args.only] if args.only else list(SETTINGS):
        child = out / f"trial_memory_{name}.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--only",
                name,
                "--trials",
                str(args.trials),
                "--fail-every",
                str(args.fail_every),
                "--json",
                str(child),
            ],
            check=True,
            env=env,
        )
        mine = json.loads(child.read_text())
        child.unlink()
        rows += mine
        print(json.dumps({"setting": name, **summarize(mine)}), flush=True)
    with open(out / "trial_memory.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "trial_memory.png")
    print(f"wrote {out / 'trial_memory.csv'} and {out / 'trial_memory.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
