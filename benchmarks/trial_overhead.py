"""Time one short sweep trial three ways: a bare PyTorch loop, a hand-written Optuna + Lightning objective, lightopt.

Every trial trains ``examples.digits.DigitsMLP(hidden=64)`` on ``DigitsDataModule(batch_size=64)``
for a few epochs (3 by default: 17 steps each) with plain SGD at a fixed learning rate, one torch
thread, and a validation pass computing ``val_loss`` after each epoch. Trial ``k`` of every arm
uses the seed ``lightopt.sweep.trial_seed(seed, k)``, so every arm starts from the same weights and
sees the same batches in the same order (the datamodule's shuffling generator is seeded by its own
``seed``); the final ``val_loss`` of the three arms is reported as a check that they did the
same work. All three arms read their batches from the same ``DigitsDataModule`` loaders, which index
the in-memory tensors once per batch (not once per example), and all three parse the digits file
once per process; B and C train the same module, which logs its epoch means once per epoch.

* **A, bare loop** (the floor): build the datamodule, an ``nn.Sequential`` equal to the MLP's net and
  ``lightopt.optim.SGD``; per batch forward, cross-entropy, backward, step; per epoch a validation
  pass under ``torch.no_grad`` giving the mean ``val_loss``. No Optuna study.
* **B, hand-written objective**, as Optuna's own PyTorch Lightning example writes it: inside
  ``objective(trial)`` seed, build the module and the datamodule, a ``Trainer`` with a
  ``TensorBoardLogger``, ``optuna_integration.PyTorchLightningPruningCallback(trial, monitor="val_loss")``
  and ``enable_checkpointing=False``; fit; return ``trainer.callback_metrics["val_loss"]``.
* **C, lightopt**: ``lightopt.sweep.Objective``, the callable ``run_sweep`` hands to
  ``study.optimize`` (it calls ``fit_trial``: TensorBoard logging, ``PruningCallback``), on a sweep
  parsed from an in-memory config equal to B's. What differs from B is lightopt's own: the sanity
  check runs in the first trial of a study in the process only (each block of C trials is a new
  study, so the first trial of every block runs it), and the Trainer lists its callback entry
  points once per process.

B and C run ``--trials`` trials per round in a study of their own (``optuna.create_study``,
in-memory storage, ``NopPruner``, the default sampler), created inside the timed block, so the
study's own cost is included; ``study.optimize`` is called with ``gc_after_trial=False`` as
``run_sweep`` does. Every trial logs to a fresh directory. Rounds run the three arms in turn, the
first arm rotating from round to round. Reported per arm: the median over rounds of the wall time
per trial, CPU time per trial, and the ratios B/A, C/A, C/B with paired bootstrap 95% intervals.
Then ``--profile-trials`` more C trials run under ``cProfile`` (one study: the first trial runs the
sanity check): the profiled time split by cause (:data:`CAUSES`) and by package, and the top
cumulative entries outside torch.

Usage::

    python benchmarks/trial_overhead.py [--rounds N] [--trials N] [--quick] [--json out.json]

See ``benchmarks/README.md`` for the results and how to read them.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import math
import os
import pstats
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import optuna
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger

try:
    from examples.digits import DigitsDataModule, DigitsMLP
except ImportError:  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.digits import DigitsDataModule, DigitsMLP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import itertools

import _measure

from lightopt.optim import SGD
from lightopt.sweep import Objective, trial_seed
from lightopt.sweep.spec import parse
from lightopt.sweep.trial import TrialFailed

TARGET = 1.5  # C / A
ARMS = ("A", "B", "C")
ARM_NAMES = {
    "A": "A: bare PyTorch loop",
    "B": "B: hand-written Optuna + Lightning objective",
    "C": "C: lightopt trial (Objective → fit_trial)",
}
HIDDEN = 64
BATCH_SIZE = 64


def optimizer_config(lr: float) -> dict[str, Any]:
    return {"class_path": "lightopt.optim.SGD", "init_args": {"lr": lr}}


def sweep_config(epochs: int, lr: float, n_trials: int, log_dir: str, seed: int) -> dict[str, Any]:
    """The sweep C runs: the same module, data and Trainer arguments as B, no search, no pruning."""
    return {
        "study": {
            "name": "trial-overhead",
            "n_trials": n_trials,
            "seed": seed,
            "pruner": {"name": "none"},
            "log_dir": log_dir,
        },
        "model": {
            "class_path": "examples.digits.DigitsMLP",
            "init_args": {"hidden": HIDDEN, "optimizer": optimizer_config(lr)},
        },
        "data": {"class_path": "examples.digits.DigitsDataModule", "init_args": {"batch_size": BATCH_SIZE}},
        "trainer": {"max_epochs": epochs, "enable_checkpointing": False, "accelerator": "cpu", "devices": 1},
    }


# ---------------------------------------------------------------------------------------------
# The three arms. Each takes (trial number, log directory) and returns the final val_loss.


def bare_trial(number: int, epochs: int, lr: float, seed: int) -> float:
    """Arm A: the same batches, forward, loss, backward and step, one validation pass per epoch."""
    torch.manual_seed(trial_seed(seed, number))
    datamodule = DigitsDataModule(batch_size=BATCH_SIZE)
    datamodule.setup()
    widths = [64, HIDDEN]
    body = [m for a, b in itertools.pairwise(widths) for m in (torch.nn.Linear(a, b), torch.nn.ReLU())]
    net = torch.nn.Sequential(torch.nn.Flatten(), *body, torch.nn.Linear(widths[-1], 10))
    optimizer = SGD(net.parameters(), lr=lr)
    train, val = datamodule.train_dataloader(), datamodule.val_dataloader()
    val_loss = math.nan
    for _ in range(epochs):
        net.train()
        for x, y in train:
            optimizer.zero_grad()
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
        net.eval()
        total, count = torch.zeros(()), 0
        with torch.no_grad():
            for x, y in val:
                total += F.cross_entropy(net(x), y) * len(y)
                count += len(y)
        val_loss = float(total / count)
    return val_loss


def handwritten_objective(root: str, epochs: int, lr: float, seed: int) -> Callable[[optuna.Trial], float]:
    """Arm B: the objective Optuna's PyTorch Lightning example writes, for the digits MLP."""
    from optuna_integration import PyTorchLightningPruningCallback

    def objective(trial: optuna.Trial) -> float:
        L.seed_everything(trial_seed(seed, trial.number), workers=True, verbose=False)
        model = DigitsMLP(hidden=HIDDEN, optimizer=optimizer_config(lr))
        datamodule = DigitsDataModule(batch_size=BATCH_SIZE)
        logger = TensorBoardLogger(root, name="", version=f"trial_{trial.number:04d}", default_hp_metric=False)
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            logger=logger,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root,
            callbacks=[PyTorchLightningPruningCallback(trial, monitor="val_loss")],
        )
        trainer.fit(model, datamodule=datamodule)
        return trainer.callback_metrics["val_loss"].item()

    return objective


class _Runner:
    """Runs one arm's block of trials (a study of their own for B and C) in a fresh log directory."""

    def __init__(self, root: str, epochs: int, lr: float, seed: int) -> None:
        self.root, self.epochs, self.lr, self.seed = root, epochs, lr, seed
        self.count = 0

    def _directory(self, arm: str) -> str:
        self.count += 1
        directory = os.path.join(self.root, f"{arm}{self.count:04d}")
        os.makedirs(directory)
        return directory

    def objective(self, arm: str, directory: str, n_trials: int) -> Callable[[optuna.Trial], float]:
        if arm == "B":
            return handwritten_objective(directory, self.epochs, self.lr, self.seed)
        sweep = parse(sweep_config(self.epochs, self.lr, n_trials, directory, self.seed))
        return Objective(sweep, Path(directory) / sweep.study.name)

    def __call__(self, arm: str, n_trials: int) -> tuple[float, float, float, float]:
        """Wall and CPU seconds of ``n_trials`` trials, seconds inside the objective, the last val_loss."""
        directory = self._directory(arm)
        inside = [0.0]
        values: list[float] = []
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        if arm == "A":
            for number in range(n_trials):
                values.append(bare_trial(number, self.epochs, self.lr, self.seed))
            inside[0] = time.perf_counter() - wall
        else:
            objective = self.objective(arm, directory, n_trials)

            def timed(trial: optuna.Trial) -> float:
                start = time.perf_counter()
                try:
                    value = objective(trial)
                    values.append(value)
                    return value
                finally:
                    inside[0] += time.perf_counter() - start

            study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
            study.optimize(timed, n_trials=n_trials, catch=(TrialFailed,), gc_after_trial=False)
            failed = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
            if failed:
                raise RuntimeError(
                    f"arm {arm}: trial {failed[0].number} ended {failed[0].state.name}: "
                    f"{failed[0].user_attrs.get('fail_reason', 'see above')}"
                )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return wall, cpu, inside[0], values[-1]


# ---------------------------------------------------------------------------------------------
# Timing and profile


def run(
    runner: _Runner, *, rounds: int, trials: int, warmup: int, rng: np.random.Generator, progress: Callable[[str], None]
) -> dict[str, Any]:
    for _ in range(warmup):  # first-use costs (lazy imports, TensorBoard's writer, the allocator) land here
        for arm in ARMS:
            runner(arm, 1)
    times: dict[str, dict[str, list[float]]] = {a: {"wall": [], "cpu": [], "inside": [], "val_loss": []} for a in ARMS}
    for r in range(rounds):
        start = time.perf_counter()
        for i in range(len(ARMS)):
            arm = ARMS[(i + r) % len(ARMS)]
            wall, cpu, inside, value = runner(arm, trials)
            t = times[arm]
            t["wall"].append(wall / trials)
            t["cpu"].append(cpu / trials)
            t["inside"].append(inside / trials)
            t["val_loss"].append(value)
        progress(f"round {r + 1}/{rounds}: {time.perf_counter() - start:.1f} s, load average {_measure.loadavg()}")
    arms = {}
    for arm in ARMS:
        t = times[arm]
        arms[arm] = {
            "name": ARM_NAMES[arm],
            "wall_s": float(np.median(t["wall"])),
            "cpu_s": float(np.median(t["cpu"])),
            "outside_objective_s": float(np.median(np.array(t["wall"]) - np.array(t["inside"]))),
            "val_loss": float(np.median(t["val_loss"])),
            **{f"{k}_rounds": v for k, v in t.items()},
        }
    wall = {a: np.array(times[a]["wall"]) for a in ARMS}
    ratios = {}
    for num, den in (("B", "A"), ("C", "A"), ("C", "B")):
        ratio = _measure.paired_ratio(wall[num], wall[den], rng)
        ratio["cpu_ratio"] = arms[num]["cpu_s"] / arms[den]["cpu_s"]
        ratios[f"{num}/{den}"] = ratio
    return {"arms": arms, "ratios": ratios}


def _package(filename: str, name: str) -> str:
    """Which package a profiled function belongs to: torch, lightning, optuna, lightopt, ..."""
    if filename == "~":  # a built-in: by what it is a method of
        if "torch" in name:
            return "torch"
        return "builtins (I/O, imports, Python)"
    path = filename.replace(os.sep, "/")
    for package in (
        "lightning_fabric",
        "lightning",
        "optuna_integration",
        "optuna",
        "lightopt",
        "tensorboard",
        "torch",
        "sklearn",
        "scipy",
        "numpy",
        "yaml",
        "fsspec",
        "google/protobuf",
    ):
        if f"/{package}/" in path:
            return {
                "lightning_fabric": "lightning",
                "google/protobuf": "protobuf (TensorBoard)",
                "optuna_integration": "optuna",
            }.get(package, package)
    if "/examples/" in path:
        return "examples (the digits module)"
    if "/benchmarks/" in path:
        return "this benchmark"
    return "Python standard library"


# Where a trial's time goes, by cause: (label, [(file path ending, function name), ...]); each cause's
# time is the cumulative time of the first-level calls of those functions. The causes may overlap a
# little (the sanity check's own self.log calls count twice); "the rest" is what none of them holds.
CAUSES = (
    ("`LightningModule.log` / `log_dict` calls", [("lightning/pytorch/core/module.py", "log")]),
    ("batch fetching and collation (`DataLoader.__next__`)", [("torch/utils/data/dataloader.py", "__next__")]),
    ("data loading and splitting (`DigitsDataModule.setup`)", [("examples/digits.py", "setup")]),
    ("LightningCLI's parsing of the trial's config", [("jsonargparse/_deprecated.py", "parse_object")]),
    ("model and datamodule construction", [("jsonargparse/_deprecated.py", "instantiate_classes")]),
    ("Trainer construction", [("lightning/pytorch/trainer/trainer.py", "__init__")]),
    ("  of which: callback entry points", [("lightning/fabric/utilities/registry.py", "_load_external_callbacks")]),
    ("sanity check", [("lightning/pytorch/trainer/trainer.py", "_run_sanity_check")]),
    (
        "TensorBoard logger (hparams, writes, close)",
        [
            ("lightning/pytorch/loggers/utilities.py", "_log_hyperparams"),
            ("lightning/pytorch/loggers/tensorboard.py", "log_metrics"),
            ("lightning/pytorch/loggers/tensorboard.py", "finalize"),
        ],
    ),
    ("fit teardown", [("lightning/pytorch/trainer/trainer.py", "_teardown")]),
    (
        "pruning callback",
        [
            ("lightopt/sweep/trial/_pruning.py", "on_train_batch_end"),
            ("lightopt/sweep/trial/_pruning.py", "on_validation_end"),
        ],
    ),
    (
        "lightopt's trial set-up (search space, config, user attrs)",
        [("lightopt/sweep/spec/_space.py", "suggest"), ("optuna/trial/_trial.py", "set_user_attr")],
    ),
)


def causes(stats: pstats.Stats, total: float, trials: int) -> list[dict[str, Any]]:
    """Cumulative time per entry of :data:`CAUSES`, per trial and as a share of ``total``, then the rest."""
    rows, counted = [], 0.0
    for label, functions in CAUSES:
        seconds = 0.0
        for (filename, _, name), (_, _, _, ct, _) in stats.stats.items():
            if any(filename.replace(os.sep, "/").endswith(path) and name == fn for path, fn in functions):
                seconds += ct
        if not label.startswith(" "):
            counted += seconds
        rows.append({"cause": label, "ms_per_trial": seconds * 1e3 / trials, "share": seconds / total})
    rest = max(total - counted, 0.0)
    rows.append(
        {
            "cause": "the rest: forward, backward and optimizer math, Lightning's loops (hook dispatch, "
            "batch transfer, progress and result bookkeeping)",
            "ms_per_trial": rest * 1e3 / trials,
            "share": rest / total,
        }
    )
    return rows


def profile(runner: _Runner, trials: int, top: int) -> dict[str, Any]:
    """Profile ``trials`` C trials; the top cumulative entries outside torch and the time per package."""
    profiler = cProfile.Profile()
    directory = runner._directory("P")
    objective = runner.objective("C", directory, trials)
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
    gc.collect()
    wall = time.perf_counter()
    profiler.enable()
    study.optimize(objective, n_trials=trials, catch=(TrialFailed,), gc_after_trial=False)
    profiler.disable()
    wall = time.perf_counter() - wall
    stats = pstats.Stats(profiler)
    total = sum(tt for (_, _, _), (_, _, tt, _, _) in stats.stats.items())
    by_package: dict[str, float] = {}
    rows, own = [], []
    for (filename, line, name), (_cc, nc, tt, ct, _) in stats.stats.items():
        package = _package(filename, name)
        by_package[package] = by_package.get(package, 0.0) + tt
        if package == "torch" or package == "this benchmark":
            continue
        where = filename.replace(os.sep, "/")
        for marker in ("site-packages/", "/work/", "/lib/python3"):
            if marker in where:
                where = where.split(marker, 1)[1]
        row = {
            "function": name if filename == "~" else f"{where}:{line}({name})",
            "package": package,
            "calls": nc,
            "cumulative_ms_per_trial": ct * 1e3 / trials,
            "own_ms_per_trial": tt * 1e3 / trials,
        }
        own.append(row)
        if filename != "~":
            rows.append(row)
    own.sort(key=lambda r: -r["own_ms_per_trial"])
    rows.sort(key=lambda r: -r["cumulative_ms_per_trial"])
    # drop the entry points above the trial itself (Optuna's optimize loop holds everything)
    rows = [r for r in rows if r["cumulative_ms_per_trial"] * trials / 1e3 < 0.999 * total or "fit" in r["function"]]
    packages = sorted(
        ({"package": p, "ms_per_trial": s * 1e3 / trials, "share": s / total} for p, s in by_package.items()),
        key=lambda r: -r["ms_per_trial"],
    )
    return {
        "trials": trials,
        "wall_s_per_trial": wall / trials,
        "profiled_s_per_trial": total / trials,
        "causes": causes(stats, total, trials),
        "top": rows[:top],
        "top_own": own[:top],
        "packages": packages,
    }


# ---------------------------------------------------------------------------------------------
# Report


def machine_info() -> dict[str, Any]:
    return _measure.machine_info(lightning=L.__version__, optuna=optuna.__version__)


def format_machine(info: dict[str, Any], epochs: int, steps_per_epoch: int, lr: float, rounds: int, trials: int) -> str:
    return "\n".join(
        [
            f"- machine: {info['cpu']}, {info['cores']} cores; device cpu",
            f"- torch {info['torch']}, lightning {info['lightning']}, optuna {info['optuna']}, "
            f"{info['threads']} intra-op thread(s), Python {info['python']}",
            f"- trial: DigitsMLP(hidden={HIDDEN}), {epochs} epoch(s) of {steps_per_epoch} steps "
            f"(batch size {BATCH_SIZE}), "
            f"SGD lr={lr}, validation every epoch",
            f"- {rounds} rounds of {trials} trial(s) per arm, arms rotated each round",
            f"- load average at start / end: {info['loadavg_start']} / {info.get('loadavg_end')}",
        ]
    )


def format_table(result: dict[str, Any]) -> str:
    arms, ratios = result["arms"], result["ratios"]
    lines = [
        "| arm | wall ms/trial | CPU ms/trial | outside the objective ms/trial | final val_loss |",
        "|---|---:|---:|---:|---:|",
    ]
    for arm in ARMS:
        a = arms[arm]
        outside = "—" if arm == "A" else f"{a['outside_objective_s'] * 1e3:.1f}"
        lines.append(
            f"| {a['name']} | {a['wall_s'] * 1e3:.1f} | {a['cpu_s'] * 1e3:.1f} | {outside} | {a['val_loss']:.5f} |"
        )
    lines += [
        "",
        "| ratio | of medians [95% CI] | per-round median [IQR] | CPU-time ratio | target |",
        "|---|---|---|---:|---|",
    ]
    for key, r in ratios.items():
        target = "—"
        if key == "C/A":
            target = "yes" if r["ratio_ci_high"] <= TARGET else "**no**" if r["ratio_ci_low"] > TARGET else "unclear"
            target = f"≤ {TARGET}: {target}"
        lines.append(
            f"| {key} | {r['ratio']:.3f} [{r['ratio_ci_low']:.3f}, {r['ratio_ci_high']:.3f}] "
            f"| {r['round_ratio_median']:.3f} [{r['round_ratio_q1']:.3f}, {r['round_ratio_q3']:.3f}] "
            f"| {r['cpu_ratio']:.3f} | {target} |"
        )
    return "\n".join(lines)


def format_profile(prof: dict[str, Any]) -> str:
    lines = [
        f"Profile of C: {prof['trials']} trial(s) under cProfile, {prof['wall_s_per_trial'] * 1e3:.0f} ms wall "
        f"per trial with the profiler on.",
        "",
        "| cause (cumulative time) | ms/trial | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {c['cause']} | {c['ms_per_trial']:.1f} | {100 * c['share']:.1f}% |" for c in prof["causes"]]
    lines += ["", "| package (own time) | ms/trial | share |", "|---|---:|---:|"]
    lines += [f"| {p['package']} | {p['ms_per_trial']:.1f} | {100 * p['share']:.1f}% |" for p in prof["packages"]]
    lines += [
        "",
        "| top cumulative, outside torch | calls/trial | cumulative ms/trial | own ms/trial |",
        "|---|---:|---:|---:|",
    ]
    for r in prof["top"]:
        lines.append(
            f"| `{r['function']}` | {r['calls'] / prof['trials']:g} | {r['cumulative_ms_per_trial']:.1f} "
            f"| {r['own_ms_per_trial']:.1f} |"
        )
    lines += [
        "",
        "| top own time, outside torch | calls/trial | own ms/trial | cumulative ms/trial |",
        "|---|---:|---:|---:|",
    ]
    for r in prof["top_own"]:
        lines.append(
            f"| `{r['function']}` | {r['calls'] / prof['trials']:g} | {r['own_ms_per_trial']:.1f} "
            f"| {r['cumulative_ms_per_trial']:.1f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/trial_overhead.py",
        description="Time a short digits-MLP sweep trial as a bare loop, a hand-written Optuna + Lightning objective "
        "and a lightopt trial, interleaved; then profile the lightopt trial.",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 25; 3 with --quick)")
    parser.add_argument("--trials", type=int, default=None, help="trials per arm per round (default 4; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run: fewer rounds and trials")
    parser.add_argument("--json", metavar="PATH", help="also write all results, per-round times included, as JSON")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    parser.add_argument("--lr", type=float, default=0.1, help="the fixed SGD learning rate (default 0.1)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 keeps torch's default)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed trials per arm before timing (default 1)")
    parser.add_argument(
        "--profile-trials",
        type=int,
        default=None,
        help="C trials run under cProfile after timing (default 10; 2 with --quick; 0: no profile)",
    )
    parser.add_argument("--top", type=int, default=20, help="profile entries to list per table (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 25)
    trials = args.trials if args.trials is not None else (2 if args.quick else 4)
    profile_trials = args.profile_trials if args.profile_trials is not None else (2 if args.quick else 10)
    checks = [
        ("rounds", rounds, 2),
        ("trials", trials, 1),
        ("epochs", args.epochs, 1),
        ("threads", args.threads, 0),
        ("warmup", args.warmup, 0),
        ("profile-trials", profile_trials, 0),
        ("top", args.top, 1),
        ("seed", args.seed, 0),
    ]
    _measure.check_at_least(parser, checks)
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"`--lr` must be a positive number, but got lr={args.lr}.")

    threads = torch.get_num_threads()
    quiet = {name: logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")}
    levels = {name: log.level for name, log in quiet.items()}
    verbosity = optuna.logging.get_verbosity()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        for log in quiet.values():
            log.setLevel(logging.ERROR)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        info = machine_info()
        with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="lightopt-trial-overhead-") as root:
            warnings.simplefilter("ignore")  # Lightning's advice (workers, log interval) in B; C silences its own
            runner = _Runner(root, args.epochs, args.lr, args.seed)
            result = run(
                runner,
                rounds=rounds,
                trials=trials,
                warmup=args.warmup,
                rng=np.random.default_rng(args.seed),
                progress=lambda line: print(line, file=sys.stderr, flush=True),
            )
            info["loadavg_end"] = _measure.loadavg()
            prof = profile(runner, profile_trials, args.top) if profile_trials else None
    finally:
        torch.set_num_threads(threads)
        for name, log in quiet.items():
            log.setLevel(levels[name])
        optuna.logging.set_verbosity(verbosity)

    steps_per_epoch = math.ceil(1077 / BATCH_SIZE)  # DigitsDataModule's default split: 1,077 training images
    print(format_machine(info, args.epochs, steps_per_epoch, args.lr, rounds, trials) + "\n")
    print(format_table(result))
    if prof:
        print("\n" + format_profile(prof))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": info,
                    "settings": {
                        "epochs": args.epochs,
                        "lr": args.lr,
                        "batch_size": BATCH_SIZE,
                        "hidden": HIDDEN,
                        "seed": args.seed,
                    },
                    "steps_per_epoch": steps_per_epoch,
                    "rounds": rounds,
                    "trials": trials,
                    "target": TARGET,
                    **result,
                    "profile": prof,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
