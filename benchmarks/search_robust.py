"""Search efficiency that one lucky initialization cannot decide: epochs until a search RECOMMENDS a near-best setting.

``search_efficiency.py`` stops a search at the first validation round within 2% of a reference,
but one trial's seed moves the digits ConvNet's validation loss by about ±25%, so that rewards a
lucky initialization that no sampler can learn. Here a search is judged by what it would hand
its user:

1. **Recommendation.** After each finished trial (pruned ones included), a search recommends
   its best trial so far by the study's value (Optuna's ``study.best_trial``: completed trials
   only; none yet is "no recommendation"). The recommended setting (SGD's lr ε and momentum α,
   the batch size: the real values, whatever coordinates the search used) is scored by its MEAN
   validation loss over ``--eval-seeds`` fresh seeds: full training, no pruning, each run scored
   as lightopt scores a trial, by its best validation round. Evaluations are cached per
   (task, setting, seed) in ``search_robust_cache.json``, so a setting recommended again, by
   another search or another run, costs nothing.
2. **Reference.** Two long searches (lightopt's default and Optuna's approach, so that neither is
   favoured, ``--reference-trials`` trials each); the ``--reference-top`` best distinct settings of
   each are trained with ``--reference-seeds`` seeds (the first ``--eval-seeds`` of them are the
   evaluation seeds); the reference is the lowest mean.
3. **Counting.** Training epochs (training examples seen over all trials, pruned included, over
   the training-set size) and wall time (search only, evaluations excluded) until the
   recommendation's score is within X% of the reference, X = 2, 5, 10; a search that does not get
   there within ``--budget-epochs`` is censored (``inf``), never dropped. A range test before the
   first trial (``lightopt-sh-range``) is part of the search: its examples and time come first.

Two tasks, both with the shipped ``sweeps/digits_sgd.yaml``'s optimizer (SGD with momentum,
Algorithm 8.2), LinearDecay schedule, sampler, pruner and chapter-coordinate search space:

* ``digits``: ``examples.digits.DigitsMLP`` (32 hidden units) on scikit-learn's digits, 4 epochs,
  two validation rounds per epoch; about a second per trial.
* ``noisy``: :class:`NoisyMLP` (16 hidden units) on :class:`NoisyClassesDataModule`, scikit-learn's
  ``make_classification`` with 10 classes, 20% flipped labels, 2,000 training examples: a model
  that cannot fit its training set, so the best setting is a trade-off rather than "train longest".

Methods, each run with the same search seeds (paired):

* ``optuna``: Optuna's documented approach, as ``search_efficiency.py`` writes it (TPESampler(),
  MedianPruner(), optuna-integration's PyTorchLightningPruningCallback, raw lr/momentum/batch
  coordinates, returns the last ``val_loss``).
* ``lightopt``: lightopt's sweep as shipped when measured: the file's study block and search space
  with the median pruner (``n_startup_trials: 5, n_warmup_steps: 2``) at validation rounds. The file
  now prunes by successive halving from the first round, which these results chose (``lightopt-sh``).
* ``lightopt-hyperband``, ``lightopt-sh``: the same with ``HyperbandPruner`` or
  ``SuccessiveHalvingPruner`` and ``report_at: examples`` (``min_resource`` one validation round's
  examples, ``reduction_factor`` 3: set before any run, not tuned).
* ``lightopt-sh-range``: ``lightopt-sh`` with ``range_test: true`` on the file's learning-rate entry,
  so the study's lr bounds are the ones the learning-rate range test (§8.3.1) suggests when the study
  is created (``settle_range_test``, as ``lightopt sweep run`` does: 100 batches at the file's batch
  size, the effective step ramped over the entry's own range, seeded with the search's seed). The
  test's training examples (counted as it trains: it builds its own Trainer, without the config's
  callbacks) over the training-set size are the search's first epochs, its time the first seconds;
  its record (the bounds, the tested range, where the loss diverged) is kept with the search.

Writes ``search_robust.json`` (settings, reference, every search with its recommendations and
their scores, tables, ratios), ``search_robust.csv`` (one row per search and tolerance) and
``search_robust.png`` (median recommendation score against epochs) to ``--out-dir``; every finished
search is appended to ``search_robust.partial.jsonl`` and ``--resume`` skips those already there,
so a run that was cut off goes on where it stopped (and ``--report-only`` writes the tables from
what exists).

Usage::

    python benchmarks/search_robust.py [--seeds 8] [--budget-epochs 60] [--workers 2] [--resume]
    python benchmarks/search_robust.py --quick
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import csv
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import optuna
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
for _path in (str(_ROOT), str(_HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from _measure import check_at_least, machine_info  # noqa: E402
from search_efficiency import (  # noqa: E402
    RAW_SEARCH,
    SWEEP_FILE,
    RoundLog,
    class_from_path,
    fit_setting,
    lightopt_study,
    median_ratio,
    optuna_objective,
    quantile,
    quiet,
    read_rounds,
)

from lightopt import ConfigureOptimizersMixin  # noqa: E402

METHODS = ("optuna", "lightopt", "lightopt-hyperband", "lightopt-sh", "lightopt-sh-range")
#: lightopt-sh with ``range_test: true`` on this search entry (the sweep file's learning rate).
RANGE_METHOD, LR_KEY = "lightopt-sh-range", "optimizer.init_args.lr"
SH_METHODS = ("lightopt-sh", RANGE_METHOD)
#: The shipped sweep file's pruner when the results in benchmarks/README.md were recorded: the ``lightopt`` method.
MEDIAN_PRUNER = {"name": "median", "n_startup_trials": 5, "n_warmup_steps": 2}
TOLERANCES = (0.02, 0.05, 0.10)
TASKS: dict[str, dict[str, Any]] = {
    "digits": {
        "model": {"class_path": "examples.digits.DigitsMLP", "init_args": {"hidden": 32}},
        "data": {"class_path": "examples.digits.DigitsDataModule", "init_args": {"batch_size": 64}},
        "max_epochs": 4,
    },
    "noisy": {
        "model": {"class_path": "search_robust.NoisyMLP", "init_args": {"hidden": 16}},
        "data": {"class_path": "search_robust.NoisyClassesDataModule", "init_args": {"batch_size": 64}},
        "max_epochs": 4,
    },
}
REFERENCE_SEED = 20_000
MAX_TRIALS = 1000  # a guard: every search ends at its budget first
PruningArgs = tuple[int, int]


# --- the second task: a model that does not fit its training set ----------------------------------


class NoisyClassesDataModule(L.LightningDataModule):
    """``make_classification``: 10 classes, 20 features (10 informative), 20% of the labels flipped at random.

    ``n_train`` training and ``n_val`` validation examples, standardized with the training set's
    mean and deviation; generated from ``seed`` (the data, not the training run). Nothing downloaded.

    Example:
        >>> dm = NoisyClassesDataModule(batch_size=50)
        >>> dm.setup()
        >>> len(dm.train_set), len(dm.val_set), tuple(next(iter(dm.train_dataloader()))[0].shape)
        (2000, 1000, (50, 20))
    """

    def __init__(self, batch_size: int = 64, n_train: int = 2000, n_val: int = 1000, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from sklearn.datasets import make_classification

        hp = self.hparams
        x, y = make_classification(
            n_samples=hp.n_train + hp.n_val,
            n_features=20,
            n_informative=10,
            n_redundant=0,
            n_classes=10,
            n_clusters_per_class=2,
            flip_y=0.2,
            random_state=hp.seed,
        )
        x = torch.tensor(x, dtype=torch.float32)
        mean, std = x[: hp.n_train].mean(0), x[: hp.n_train].std(0)
        x = (x - mean) / std
        y = torch.tensor(y, dtype=torch.long)
        self.train_set = TensorDataset(x[: hp.n_train], y[: hp.n_train])
        self.val_set = TensorDataset(x[hp.n_train :], y[hp.n_train :])

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(self.train_set, self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, 500)


class NoisyMLP(ConfigureOptimizersMixin, L.LightningModule):
    """One hidden ReLU layer of ``hidden`` units; logs ``val_loss`` (the mean over the validation set).

    Example:
        >>> tuple(NoisyMLP(hidden=8)(torch.zeros(3, 20)).shape)
        (3, 10)
    """

    def __init__(
        self,
        hidden: int = 16,
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(20, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y), batch_size=len(y))


# --- one task, one method -------------------------------------------------------------------------


def task_data(
    task: str, method: str, seed: int, log_path: str, max_epochs: int | None = None, pruning: PruningArgs = (1, 3)
) -> dict[str, Any]:
    """The shipped sweep file with the task's model, data and epochs, the method's pruner, a RoundLog.

    ``pruning`` is (``min_resource`` in validation rounds, ``reduction_factor``) of the Hyperband and
    successive-halving methods.
    """
    import yaml

    spec = TASKS[task]
    data = yaml.safe_load(SWEEP_FILE.read_text(encoding="utf-8"))
    data["model"] = copy.deepcopy(spec["model"])
    data["data"] = copy.deepcopy(spec["data"])
    data["trainer"]["max_epochs"] = max_epochs or spec["max_epochs"]
    data["trainer"]["callbacks"] = [
        {"class_path": "search_efficiency.RoundLog", "init_args": {"path": log_path, "threshold": None}}
    ]
    data["study"]["seed"] = seed
    data["study"]["sampler"] = {**data["study"]["sampler"], "seed": seed}
    if method in ("lightopt-hyperband", *SH_METHODS):
        round_examples = max(n_train(task) // 2, 1)  # one validation round (val_check_interval 0.5)
        name = "hyperband" if method == "lightopt-hyperband" else "successive_halving"
        rounds, factor = pruning
        data["study"]["pruner"] = {"name": name, "min_resource": rounds * round_examples, "reduction_factor": factor}
        data["study"]["report_at"] = "examples"
    if method == RANGE_METHOD:  # the entry's low/high stay: they are the range the test ramps over
        data["search"][LR_KEY] = {**data["search"][LR_KEY], "range_test": True}
    elif method == "lightopt":  # the file's pruner when these results were recorded (it now prunes as lightopt-sh)
        data["study"]["pruner"] = dict(MEDIAN_PRUNER)
        data["study"]["report_at"] = "validation_round"
    return data


def n_train(task: str) -> int:
    spec = TASKS[task]["data"]
    datamodule = class_from_path(spec["class_path"])(**spec["init_args"])
    datamodule.setup()
    return len(datamodule.train_set)


def setting_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The real lr, momentum and batch size of a trial: Optuna's raw params or lightopt's trial config."""
    if "config" in trial.user_attrs:
        config = trial.user_attrs["config"]
        init = config["optimizer"]["init_args"] if "optimizer" in config else config["model"]["init_args"]
        params = {
            "lr": init["lr"],
            "momentum": init["momentum"],
            "batch_size": config["data"]["init_args"]["batch_size"],
        }
    else:
        params = dict(trial.params)
    return {
        "lr": float(f"{params['lr']:.6g}"),
        "momentum": float(f"{params['momentum']:.6g}"),
        "batch_size": int(params["batch_size"]),
    }


def setting_key(task: str, setting: dict[str, Any]) -> str:
    return f"{task}|lr={setting['lr']:.6g}|momentum={setting['momentum']:.6g}|batch_size={setting['batch_size']}"


def evaluate(task: str, setting: dict[str, Any], seed: int, max_epochs: int | None = None) -> float:
    """One full training run of ``setting`` with ``seed``, no pruning; its best validation round's loss."""
    quiet()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="search_robust_eval_") as root:
        log_path = os.path.join(root, "rounds.jsonl")
        data = task_data(task, "optuna", 0, log_path, max_epochs)
        fit_setting(data, setting["lr"], setting["momentum"], setting["batch_size"], seed, root, [RoundLog(log_path)])
        values = [v for trial in read_rounds(log_path, 1) for _, v, _ in trial["rounds"] if math.isfinite(v)]
    return min(values) if values else math.inf


class TrainingExamples:
    """While entered, counts the batches and examples a LightningModule trains on (a global forward pre-hook).

    The range test builds its own Trainer without the config's callbacks, so no callback can count
    what it trains on; both tasks' models call their ``forward`` once per training batch, with the
    batch's inputs, so their first dimension is the batch's examples (what ``RoundLog`` counts for
    a trial). Calls in eval mode (none in a range test) are not counted.
    """

    def __init__(self) -> None:
        self.batches = self.examples = 0
        self._handle = None

    def _count(self, module: torch.nn.Module, args: tuple) -> None:
        if isinstance(module, L.LightningModule) and module.training and args and torch.is_tensor(args[0]):
            self.batches += 1
            self.examples += int(args[0].shape[0])

    def __enter__(self) -> TrainingExamples:
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._count)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()


def range_tested_study(data: dict[str, Any], root: str, size: int):
    """``(study, objective, range test)``: lightopt's study after the range test of the lr entry.

    As ``lightopt sweep run`` creates a study (``settle_range_test`` on the parsed file, then the
    sampler of the bounded search space) and otherwise as ``search_efficiency.lightopt_study``
    builds it: in memory, the file's sampler and pruner, lightopt's objective. The third item is
    the test's record (what the study would store in ``user_attrs["lightopt"]["range_test"]``:
    the bounds ``low``/``high`` in the entry's coordinate, the tested range, the momentum, where the
    loss diverged) with the batches and examples it trained on, its ``epochs`` (examples over the
    training set's ``size``) and ``wall_s``.
    """
    import contextlib
    import io

    from lightopt.sweep import spec as sweep_config
    from lightopt.sweep.study import settle_range_test
    from lightopt.sweep.trial import Objective

    sweep = sweep_config.parse({**data, "study": {**data["study"], "log_dir": root}})  # its plot goes to root
    start = time.time()
    shown = io.StringIO()
    with TrainingExamples() as counted, contextlib.redirect_stderr(io.StringIO()):  # Lightning's progress bar
        sweep, record = settle_range_test(sweep, None, sweep.study.name, shown)
    tested = {
        **{k: v for k, v in record.items() if k != "plot"},
        "batches": counted.batches,
        "examples": counted.examples,
        "epochs": counted.examples / size,
        "wall_s": time.time() - start,
        "summary": [  # the suggested range and the rule that gave it, as `lightopt sweep run` prints them
            line.strip() for line in shown.getvalue().splitlines() if line.lstrip().startswith(("suggested", "(upper"))
        ],
    }
    spec = sweep.study
    study = optuna.create_study(
        direction=spec.direction, sampler=spec.make_sampler(sweep.search), pruner=spec.make_pruner()
    )
    return study, Objective(sweep, root), tested


def run_search(
    task: str,
    method: str,
    seed: int,
    budget_epochs: float | None,
    n_trials: int | None,
    max_epochs: int | None = None,
    pruning: PruningArgs = (1, 3),
    detail: bool = False,
) -> dict[str, Any]:
    """One search until ``budget_epochs`` (or ``n_trials``); after each trial: epochs spent, the recommendation.

    For ``lightopt-sh-range`` the range test's epochs and time count from the start, before trial 0.
    With ``detail``, each trial's record also holds the trial itself: its ``number``, ``value`` (None
    when pruned), its own setting ``own`` and the ``trial_seed`` it was trained with (lightopt's
    recorded seed; None for ``optuna``, whose trial k is seeded ``trial_seed(search seed, k)``).
    """
    from lightopt.sweep.trial import TrialFailed

    quiet()
    torch.set_num_threads(1)
    size = n_train(task)
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"search_robust_{method}_") as root:
        log_path = os.path.join(root, "rounds.jsonl")
        data = task_data(task, method, seed, log_path, max_epochs, pruning)
        tested = None
        begun = time.time()
        if method == "optuna":
            study, objective = optuna_objective(data, seed, log_path, None, root)
        elif method == RANGE_METHOD:
            study, objective, tested = range_tested_study(data, root, size)
        else:
            study, objective = lightopt_study(data, root)
        before = 0.0 if tested is None else tested["epochs"]  # the range test trained first

        def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            spent = before + sum(t["epochs"] for t in read_rounds(log_path, size))
            try:
                best = setting_of(study.best_trial)
            except ValueError:  # no completed trial yet
                best = None
            records.append({"epochs": spent, "wall_s": time.time() - start, "state": trial.state.name, "setting": best})
            if detail:
                records[-1].update(
                    number=trial.number,
                    value=trial.value,
                    own=setting_of(trial) if trial.params or "config" in trial.user_attrs else None,
                    trial_seed=trial.user_attrs.get("seed"),
                )
            if budget_epochs is not None and spent >= budget_epochs:
                study.stop()

        start = time.time() if tested is None else begun
        study.optimize(
            objective,
            n_trials=n_trials or MAX_TRIALS,
            catch=(TrialFailed,),
            callbacks=[record],
            gc_after_trial=False,
        )
        ranked = sorted(
            (t for t in study.trials if t.value is not None and math.isfinite(t.value)), key=lambda t: t.value
        )
        distinct: dict[str, dict[str, Any]] = {}
        for t in ranked:
            distinct.setdefault(setting_key(task, setting_of(t)), {**setting_of(t), "value": t.value})
    result = {"task": task, "method": method, "seed": seed, "trials": records, "ranked": list(distinct.values())}
    return result if tested is None else {**result, "range_test": tested}


def search_and_evaluate(
    task: str,
    method: str,
    seed: int,
    budget_epochs: float,
    eval_seeds: Sequence[int],
    known: dict[str, dict[str, float]],
    max_epochs: int | None = None,
    pruning: PruningArgs = (1, 3),
) -> dict[str, Any]:
    """A search, then every setting it recommended on the ``eval_seeds`` that ``known`` lacks."""
    result = run_search(task, method, seed, budget_epochs, None, max_epochs, pruning)
    result.pop("ranked")
    result["evaluations"] = {}
    for trial in result["trials"]:
        if trial["setting"] is None:
            continue
        key = setting_key(task, trial["setting"])
        have = {**known.get(key, {}), **result["evaluations"].get(key, {})}
        for s in eval_seeds:
            if str(s) not in have:
                loss = evaluate(task, trial["setting"], s, max_epochs)
                result["evaluations"].setdefault(key, {})[str(s)] = loss
                have[str(s)] = loss
    return result


def evaluate_many(task: str, setting: dict[str, Any], seeds: Sequence[int], max_epochs: int | None = None):
    return setting_key(task, setting), {str(s): evaluate(task, setting, s, max_epochs) for s in seeds}


# --- scoring and statistics -----------------------------------------------------------------------


def score(evaluations: dict[str, dict[str, float]], key: str, seeds: Sequence[int]) -> float:
    """Mean validation loss of a setting over ``seeds``; ``inf`` if any of them is missing or diverged."""
    losses = [evaluations.get(key, {}).get(str(s), math.inf) for s in seeds]
    return float(np.mean(losses)) if all(math.isfinite(v) for v in losses) else math.inf


def trajectory(search: dict[str, Any], evaluations: dict[str, dict[str, float]], seeds: Sequence[int]) -> list:
    """``[epochs spent, wall seconds, score of the recommendation]`` after each trial (``inf``: none yet)."""
    return [
        [
            t["epochs"],
            t["wall_s"],
            math.inf if t["setting"] is None else score(evaluations, setting_key(search["task"], t["setting"]), seeds),
        ]
        for t in search["trials"]
    ]


def first_within(points: Sequence[Sequence[float]], threshold: float, budget: float) -> tuple[float, float]:
    """Epochs and wall time at the first point whose score is <= ``threshold`` within ``budget``; else ``inf``.

    Example:
        >>> first_within([[10, 1.0, math.inf], [20, 2.0, 0.5], [30, 3.0, 0.4]], 0.45, 100)
        (30, 3.0)
        >>> first_within([[10, 1.0, 0.5], [120, 9.0, 0.4]], 0.45, 100)
        (inf, inf)
    """
    for epochs, wall, value in points:
        if epochs > budget:
            break
        if value <= threshold:
            return epochs, wall
    return math.inf, math.inf


def summarize(
    searches: list[dict[str, Any]],
    evaluations: dict[str, dict[str, float]],
    references: dict[str, float],
    seeds: Sequence[int],
    budget: float,
) -> dict[str, Any]:
    """Per task, tolerance and method: searches reached, median [IQR] epochs and wall, Optuna over each method."""
    for s in searches:
        points = trajectory(s, evaluations, seeds)
        s["scores"] = points
        s["within"] = {}
        for tol in TOLERANCES:
            epochs, wall = first_within(points, references[s["task"]] * (1 + tol), budget)
            s["within"][f"{tol:g}"] = {"epochs": epochs, "wall_s": wall}
    return tables_of(searches, list(references))


def tables_of(searches: list[dict[str, Any]], tasks: Sequence[str]) -> dict[str, Any]:
    """The tables of :func:`summarize` from searches whose ``within`` is set (each against its own reference)."""
    tables: dict[str, Any] = {}
    for task in tasks:
        for tol in TOLERANCES:
            rows = {}
            by_method = {m: {s["seed"]: s for s in searches if s["task"] == task and s["method"] == m} for m in METHODS}
            for method, found in by_method.items():
                if not found:
                    continue
                epochs = [s["within"][f"{tol:g}"]["epochs"] for s in found.values()]
                walls = [s["within"][f"{tol:g}"]["wall_s"] for s in found.values()]
                rows[method] = {
                    "searches": len(epochs),
                    "reached": sum(math.isfinite(e) for e in epochs),
                    "epochs_median": quantile(epochs, 0.5),
                    "epochs_q1": quantile(epochs, 0.25),
                    "epochs_q3": quantile(epochs, 0.75),
                    "wall_median_s": quantile(walls, 0.5),
                }
                if method != "optuna" and by_method["optuna"]:
                    paired = sorted(set(found) & set(by_method["optuna"]))
                    base = [by_method["optuna"][k]["within"][f"{tol:g}"]["epochs"] for k in paired]
                    mine = [found[k]["within"][f"{tol:g}"]["epochs"] for k in paired]
                    rows[method]["optuna_over_this"] = median_ratio(base, mine)
            tables[f"{task} {tol:g}"] = rows
    return tables


def range_tests(searches: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task, the range tests of the searches that ran one: epochs and seconds (median, range), the bounds.

    ``bounds`` lists ``[seed, low, high]`` in the entry's coordinate (``coordinate``; the learning
    rate is the value times the entry's scale, 1 − α for the effective step at the file's batch).
    """
    out: dict[str, Any] = {}
    for task in sorted({s["task"] for s in searches if "range_test" in s}):
        tests = [(s["seed"], s["range_test"]) for s in searches if s["task"] == task and "range_test" in s]
        epochs = [t["epochs"] for _, t in tests]
        walls = [t["wall_s"] for _, t in tests]
        out[task] = {
            "searches": len(tests),
            "coordinate": tests[0][1]["coordinate"],
            "momentum": tests[0][1]["momentum"],
            "tested": tests[0][1]["tested"],
            "batches_median": quantile([t["batches"] for _, t in tests], 0.5),
            "epochs_median": quantile(epochs, 0.5),
            "epochs_range": [min(epochs), max(epochs)],
            "wall_median_s": quantile(walls, 0.5),
            "diverged": sum(t["diverged_at"] is not None for _, t in tests),
            "bounds": [[seed, t["low"], t["high"]] for seed, t in tests],
        }
    return out


def format_range_tests(summary: dict[str, Any]) -> str:
    lines = []
    for task, row in summary.items():
        bounds = ", ".join(f"seed {seed}: [{low:.3g}, {high:.3g}]" for seed, low, high in row["bounds"])
        lines.append(
            f"\n{task}: range tests of {row['searches']} searches, {row['batches_median']:g} batches, "
            f"{row['epochs_median']:.2f} epochs ({row['epochs_range'][0]:.2f} to {row['epochs_range'][1]:.2f}), "
            f"{row['wall_median_s']:.1f} s (medians); diverged in {row['diverged']}; bounds in {row['coordinate']} "
            f"(tested {row['tested'][0]:g} to {row['tested'][1]:g}, momentum {row['momentum']}): {bounds}"
        )
    return "\n".join(lines)


def _fmt(value: float, digits: int = 1) -> str:
    return "censored" if math.isinf(value) else f"{value:.{digits}f}"


def _ratio(value: float | None) -> str:
    return "undefined" if value is None else "inf" if math.isinf(value) else f"{value:.2f}"


def format_tables(tables: dict[str, Any], budget: float) -> str:
    lines = []
    for name, rows in tables.items():
        task, tol = name.split()
        lines += [
            f"\n{task}: recommendation within {float(tol):.0%} of the reference (budget {budget:g} epochs)",
            "| method | reached | epochs: median [IQR] | wall: median | Optuna's median epochs / this [95% CI] |",
            "|---|---|---|---|---|",
        ]
        for method, row in rows.items():
            ratio = row.get("optuna_over_this")
            shown = "-"
            if ratio is not None:  # inf: only Optuna's median censored; 0: only this method's; undefined: both
                ci = ratio["ci95"]
                interval = "no interval" if ci is None else f"[{_ratio(ci[0])}, {_ratio(ci[1])}]"
                shown = f"{_ratio(ratio['ratio'])} {interval}"
            wall = _fmt(row["wall_median_s"]) + (" s" if math.isfinite(row["wall_median_s"]) else "")
            lines.append(
                f"| {method} | {row['reached']}/{row['searches']} | {_fmt(row['epochs_median'])} "
                f"[{_fmt(row['epochs_q1'])}, {_fmt(row['epochs_q3'])}] | {wall} | {shown} |"
            )
    return "\n".join(lines)


def plot(searches: list[dict[str, Any]], references: dict[str, float], budget: float, path: Path) -> None:
    """Per task, the median over searches of (recommendation score / reference - 1) against epochs spent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(references)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.8), squeeze=False)
    grid = np.linspace(0, budget, 300)
    for ax, task in zip(axes[0], tasks):
        for method in METHODS:
            rows = [s for s in searches if s["task"] == task and s["method"] == method]
            if not rows:
                continue
            curves = []
            for s in rows:
                excess = [(e, v / references[task] - 1) for e, _, v in s["scores"]]
                curves.append([next((x for e, x in reversed(excess) if e <= g), math.inf) for g in grid])
            median = np.array([quantile(column, 0.5) for column in zip(*curves)])
            shown = np.where(np.isfinite(median), np.maximum(100 * median, 0.1), np.nan)  # at or below: 0.1%
            ax.step(grid, shown, where="post", label=method)
        for tol in TOLERANCES:
            ax.axhline(100 * tol, color="grey", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("training epochs spent by the search")
        ax.set_ylabel("% above the reference (0.1: at or below)")
        ax.set_title(f"{task}: the recommendation's seed-mean loss, median over searches", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- driver ---------------------------------------------------------------------------------------


def run_pool(jobs: list[Callable[[], tuple[Callable, tuple]]], workers: int, done: Callable[[Any], None]) -> None:
    """Run jobs in ``workers`` processes (in this one for 1), calling ``done`` on each result.

    A job is a callable giving ``(function, args)``, called when the job starts, so its arguments
    see the results of the jobs done before it (the evaluations cached so far).
    """
    if workers == 1:
        for job in jobs:
            function, args = job()
            done(function(*args))
        return
    context = multiprocessing.get_context("spawn")
    pending = list(jobs)
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        running = set()
        while pending or running:
            while pending and len(running) < workers:
                function, args = pending.pop(0)()
                running.add(pool.submit(function, *args))
            finished, running = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                done(future.result())


def make_job(function: Callable, *args: Any) -> Callable[[], tuple[Callable, tuple]]:
    return lambda: (function, args)


def _search_job(cache: Cache, *args: Any) -> Callable[[], tuple[Callable, tuple]]:
    task, method, seed, budget, eval_seeds, max_epochs, pruning = args
    return lambda: (
        search_and_evaluate,
        (task, method, seed, budget, eval_seeds, cache.evaluations, max_epochs, pruning),
    )


class Cache:
    """The JSON cache: ``evaluations[key][seed] = loss`` and the reference searches, saved after each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        self.data.setdefault("evaluations", {})
        self.data.setdefault("reference_searches", {})

    @property
    def evaluations(self) -> dict[str, dict[str, float]]:
        return self.data["evaluations"]

    def add(self, evaluations: dict[str, dict[str, float]]) -> None:
        for key, losses in evaluations.items():
            self.evaluations.setdefault(key, {}).update(losses)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data), encoding="utf-8")
        tmp.replace(self.path)


REFERENCE_METHODS = ("lightopt", "optuna")  # one long search each, so that neither is favoured


def reference(
    tasks: Sequence[str], args: argparse.Namespace, cache: Cache, ref_seeds: Sequence[int], max_epochs: int | None
) -> dict[str, Any]:
    """Per task: two long searches (cached), their top distinct settings on ``ref_seeds``, the lowest mean."""
    wanted = {"trials": args.reference_trials, "max_epochs": max_epochs}
    stored = cache.data["reference_searches"]
    jobs = [
        make_job(run_search, task, method, REFERENCE_SEED + i, None, args.reference_trials, max_epochs)
        for i, task in enumerate(tasks)
        for method in REFERENCE_METHODS
        if stored.get(f"{task} {method}", {}).get("settings") != wanted
    ]
    if jobs:
        print(f"reference: {len(jobs)} long searches of {args.reference_trials} trials", flush=True)

    def keep(result: dict[str, Any]) -> None:
        stored[f"{result['task']} {result['method']}"] = {"settings": wanted, "ranked": result["ranked"]}
        cache.save()

    run_pool(jobs, args.workers, keep)

    def candidates_of(task: str) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for method in REFERENCE_METHODS:
            for setting in stored[f"{task} {method}"]["ranked"][: args.reference_top]:
                found.setdefault(setting_key(task, setting), {**setting, "search": method})
        return list(found.values())

    evals = []
    for task in tasks:
        for setting in candidates_of(task):
            have = cache.evaluations.get(setting_key(task, setting), {})
            missing = [s for s in ref_seeds if str(s) not in have]
            if missing:
                evals.append(make_job(evaluate_many, task, setting, missing, max_epochs))
    if evals:
        print(f"reference: {len(evals)} settings to train on up to {len(ref_seeds)} seeds", flush=True)
    run_pool(evals, args.workers, lambda pair: cache.add({pair[0]: pair[1]}))
    out = {}
    for task in tasks:
        candidates = []
        for setting in candidates_of(task):
            losses = [cache.evaluations[setting_key(task, setting)][str(s)] for s in ref_seeds]
            candidates.append({**setting, "mean": float(np.mean(losses)), "losses": losses})
        best = min(candidates, key=lambda c: c["mean"])
        out[task] = {"value": best["mean"], "best": best, "candidates": candidates}
        print(
            f"reference {task}: {best['mean']:.5f} (lr {best['lr']:.4g}, momentum {best['momentum']:.3g}, "
            f"batch {best['batch_size']}, from the {best['search']} search, where it scored {best['value']:.5f}; "
            f"seeds {min(best['losses']):.5f} to {max(best['losses']):.5f})",
            flush=True,
        )
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="searches per method and task (default 8)")
    parser.add_argument("--first-seed", type=int, default=0, help="search seeds FIRST_SEED, ... (default 0)")
    parser.add_argument("--budget-epochs", type=float, default=60.0, help="epochs per search (default 60)")
    parser.add_argument("--eval-seeds", type=int, default=3, help="fresh seeds a recommendation is scored on (3)")
    parser.add_argument(
        "--eval-first-seed", type=int, default=90_000, help="evaluation seeds start here (default 90000)"
    )
    parser.add_argument("--reference-trials", type=int, default=120, help="trials of each long search (120)")
    parser.add_argument("--reference-top", type=int, default=8, help="each long search's best settings retrained (8)")
    parser.add_argument("--reference-seeds", type=int, default=6, help="seeds each of them is trained with (6)")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes, 1 torch thread each (default 2)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out-dir", default=str(_HERE / "results"), help="where the JSON, CSV and PNG go")
    parser.add_argument(
        "--min-resource-rounds",
        type=int,
        default=1,
        help="Hyperband's and successive halving's min_resource, in validation rounds' examples (default 1)",
    )
    parser.add_argument("--reduction-factor", type=int, default=3, help="their reduction_factor (default 3)")
    parser.add_argument("--cache", help="the evaluation cache (default OUT_DIR/search_robust_cache.json)")
    parser.add_argument("--resume", action="store_true", help="skip the searches already in the partial file")
    parser.add_argument("--report-only", action="store_true", help="run nothing: the tables from the partial file")
    parser.add_argument(
        "--pool",
        nargs="+",
        metavar="DIR",
        help="run nothing: the tables over the searches of finished runs (each DIR's search_robust.json, each "
        "search against its own run's reference), written to OUT_DIR/search_robust_pooled.json",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1-epoch trials, tiny budgets")
    return parser


def pooled(directories: Sequence[Path]) -> tuple[dict[str, Any], float]:
    """The tables over the searches of the finished runs in ``directories``, and their (common) budget.

    Each search keeps the epochs at which it got within X% of its own run's reference, so runs on
    other search seeds and evaluation seeds (a held-out set) pool as paired searches: a pair is a
    method's and Optuna's search of the same run and seed.
    """
    searches, budgets, tasks = [], set(), []
    for directory in directories:
        path = Path(directory) / "search_robust.json"
        if not path.is_file():
            raise ValueError(f"`--pool`: {path} does not exist; give the out-dir of a finished run.")
        run = json.loads(path.read_text(encoding="utf-8"))
        budgets.add(run["settings"]["budget_epochs"])
        tasks += [t for t in run["reference"] if t not in tasks]
        searches += [{**s, "seed": f"{directory}:{s['seed']}"} for s in run["searches"]]
    if len(budgets) != 1:
        raise ValueError(f"`--pool`: the runs have different budgets ({sorted(budgets)}); pool runs of one budget.")
    return tables_of(searches, tasks), budgets.pop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.pool:
        try:
            tables, budget = pooled([Path(d) for d in args.pool])
        except ValueError as error:
            parser.error(str(error))
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        report = {"runs": args.pool, "budget_epochs": budget, "tables": tables}
        (out / "search_robust_pooled.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(format_tables(tables, budget))
        return 0
    check_at_least(
        parser,
        [
            ("seeds", args.seeds, 1),
            ("eval-seeds", args.eval_seeds, 1),
            ("reference-trials", args.reference_trials, 1),
            ("reference-top", args.reference_top, 1),
            ("reference-seeds", args.reference_seeds, args.eval_seeds),
            ("workers", args.workers, 1),
            ("min-resource-rounds", args.min_resource_rounds, 1),
            ("reduction-factor", args.reduction_factor, 2),
        ],
    )
    if not args.budget_epochs > 0:
        parser.error(f"`--budget-epochs` must be > 0, but got budget_epochs={args.budget_epochs}.")
    quiet()
    max_epochs = 1 if args.quick else None
    stem = "search_robust_quick" if args.quick else "search_robust"
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Cache(Path(args.cache) if args.cache else out / f"{stem}_cache.json")
    pruning = (args.min_resource_rounds, args.reduction_factor)
    partial = out / f"{stem}.partial.jsonl"
    info = machine_info(workers=args.workers)
    print(f"{info['cpu']}; {args.workers} processes, 1 torch thread each", flush=True)
    started = time.time()
    ref_seeds = list(range(args.eval_first_seed, args.eval_first_seed + args.reference_seeds))
    eval_seeds = ref_seeds[: args.eval_seeds]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    key_of = {
        "budget_epochs": args.budget_epochs,
        "max_epochs": max_epochs,
        "eval_seeds": eval_seeds,
        "pruning": list(pruning),
    }
    done: list[dict[str, Any]] = []
    written = out / f"{stem}.json"  # the searches of a finished run, where its partial file is gone (not in git)
    if args.report_only and not partial.exists() and not written.exists():
        parser.error(
            f"`--report-only` needs the searches of an earlier run, but neither {partial} nor {written} exists."
        )
    if (args.resume or args.report_only) and partial.exists():
        done = [json.loads(line) for line in partial.read_text(encoding="utf-8").splitlines() if line]
        done = [s for s in done if s.get("run") == key_of]
    elif args.report_only:
        done = [s for s in json.loads(written.read_text(encoding="utf-8"))["searches"] if s.get("run") == key_of]
    elif partial.exists():
        partial.unlink()
    detail = reference(args.tasks, args, cache, ref_seeds, max_epochs)  # nothing to run once cached
    refs = {t: r["value"] for t, r in detail.items()}
    if not args.report_only:
        have = {(s["task"], s["method"], s["seed"]) for s in done}
        jobs = [
            _search_job(cache, task, method, seed, args.budget_epochs, eval_seeds, max_epochs, pruning)
            for seed in seeds
            for method in args.methods
            for task in args.tasks
            if (task, method, seed) not in have
        ]
        print(f"{len(jobs)} searches ({len(done)} done before)", flush=True)

        def keep(result: dict[str, Any]) -> None:
            cache.add(result.pop("evaluations"))
            result["run"] = key_of
            done.append(result)
            with open(partial, "a", encoding="utf-8") as file:
                file.write(json.dumps(result) + "\n")
            last = result["trials"][-1] if result["trials"] else {"epochs": 0, "wall_s": 0}
            tested = result.get("range_test")
            first = "" if tested is None else f" (range test {tested['epochs']:.1f} of them)"
            print(
                f"  {result['task']:>6} {result['method']:>18} seed {result['seed']}: {len(result['trials'])} trials, "
                f"{last['epochs']:.1f} epochs{first}, {last['wall_s']:.0f} s ({time.time() - started:.0f} s in)",
                flush=True,
            )

        run_pool(jobs, args.workers, keep)
    searches = [s for s in done if s["task"] in refs and s["method"] in args.methods]
    searches.sort(key=lambda s: (s["task"], METHODS.index(s["method"]), s["seed"]))
    tables = summarize(searches, cache.evaluations, refs, eval_seeds, args.budget_epochs)
    tested = range_tests(searches)
    report = {
        "settings": {**vars(args), "tasks": {t: TASKS[t] for t in refs}, "raw_search": RAW_SEARCH},
        "machine": info,
        "reference": refs,
        "reference_detail": detail,
        "eval_seeds": eval_seeds,
        "searches": searches,
        "tables": tables,
        "range_tests": tested,
        "wall_total_s": time.time() - started,
    }
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    with open(out / f"{stem}.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["task", "method", "seed", "tolerance", "epochs_to_within", "wall_to_within_s", "epochs_spent"])
        for s in searches:
            spent = s["trials"][-1]["epochs"] if s["trials"] else 0.0
            for tol, hit in s["within"].items():
                writer.writerow([s["task"], s["method"], s["seed"], tol, hit["epochs"], hit["wall_s"], spent])
    plot(searches, refs, args.budget_epochs, out / f"{stem}.png")
    print(format_tables(tables, args.budget_epochs))
    if tested:
        print(format_range_tests(tested))
    print(f"results: {out / stem}.{{json,csv,png}}; {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
