"""Search efficiency: training epochs a search spends before it first reaches a near-best validation loss.

The task is the README's main sweep, ``sweeps/digits_sgd.yaml``: SGD with momentum (Algorithm 8.2)
and LinearDecay on ``examples.digits.DigitsConvNet``, 6 epochs per trial, two validation rounds
per epoch, searching learning rate, momentum and batch size. The model, data, trainer and
schedule come from that file; the search block and the method come from here.

1. **Reference.** Two long TPE searches with pruning (one per lightopt coordinate system, so
   neither is favoured), ``--reference-trials`` each, cached in ``search_efficiency_reference.json``
   and reused with ``--reuse-reference`` when their settings match. The threshold is
   ``(1 + --tolerance)`` times the reference (2% by default), where the reference is, with
   ``--reference-value lowest`` (the default), the lowest ``val_loss`` of any validation round of
   either search. To show how much of that is the luck of one initialization, each search's best
   setting is also trained again with ``--reference-seeds`` other seeds (cached too): with
   ``--reference-value setting-median`` the reference is the lower of the two medians.
2. **Methods**, each run once per seed, until the threshold is first reached in some validation
   round of some trial, or ``--budget-epochs`` training epochs are spent (censored):

   * ``lightopt-raw``: lightopt's objective (``PruningCallback`` at every validation round) with
     the sweep file's sampler and pruner (TPE, ``n_startup_trials: 8``; median pruner), raw
     lr ∈ [1e-3, 1] log, momentum ∈ [0, 0.99], batch size ∈ {16, ..., 256}.
   * ``lightopt-chapter``: the same, in the chapter's coordinates: momentum as its horizon
     h = 1/(1 − α) ∈ [1, 100] log (α ∈ [0, 0.99]), the effective step ε/(1 − α) ∈ [1e-2, 10]
     log (three decades, as the raw lr, shifted by the factor 1/(1 − α) = 10 of α = 0.9) at
     batch size 64, scaled linearly with the batch size.
   * ``optuna``: Optuna's documented approach, written as its ``pytorch_lightning_simple.py``
     example: a hand-written objective, ``TPESampler`` and ``MedianPruner()`` with their
     defaults, optuna-integration's ``PyTorchLightningPruningCallback(trial, monitor="val_loss")``,
     a TensorBoard logger, ``enable_checkpointing=False``, the raw space above; it returns the
     last ``val_loss``.
   * ``random``: lightopt's objective, ``RandomSampler``, no pruning, the raw space.

Epochs are fractional: training examples seen (over all trials, pruned and failed ones included,
up to the round that reached the threshold) divided by the training-set size. A trial stops once
it reaches the threshold, since the search is then done. Wall time is from the start of the
search to that round; it is noisy on a shared machine. Each search logs to a temporary directory;
every trial uses one torch thread and ``--workers`` searches run in parallel processes.

Writes ``search_efficiency.json`` (settings, reference, every search), ``search_efficiency.csv``
(one row per search) and ``search_efficiency.png`` (fraction of seeds that reached the threshold
against epochs spent) to ``--out-dir``.

The ratio of Optuna's median epochs to each lightopt method's comes with a bootstrap 95% interval
over seeds (paired: the same seed draws the same first trials in every TPE method). ``--summarize
JSON`` re-reads a results file and writes the tables and plot again without running anything;
``--sweep-file`` and ``--first-seed`` run the same comparison on another sweep file's sampler and
pruner, or on seeds kept apart from the reported ones.

Usage::

    python benchmarks/search_efficiency.py [--seeds 20] [--budget-epochs 400] [--workers 2] [--reuse-reference]
    python benchmarks/search_efficiency.py --quick

See ``benchmarks/README.md`` for the results and how to read them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import csv
import importlib
import json
import logging
import math
import multiprocessing
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from lightning.pytorch import Callback

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
for _path in (str(_ROOT), str(_HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from _measure import check_at_least, machine_info  # noqa: E402

SWEEP_FILE = _ROOT / "sweeps" / "digits_sgd.yaml"
METHODS = ("lightopt-raw", "lightopt-chapter", "optuna", "random")
BATCH_SIZES = [16, 32, 64, 128, 256]
RAW_SEARCH = {
    "optimizer.init_args.lr": {"low": 1.0e-3, "high": 1.0, "log": True},
    "optimizer.init_args.momentum": {"low": 0.0, "high": 0.99},
    "data.init_args.batch_size": {"choices": BATCH_SIZES},
}
CHAPTER_SEARCH = {
    "optimizer.init_args.momentum": {"low": 1.0, "high": 100.0, "log": True, "coordinate": "horizon"},
    "optimizer.init_args.lr": {
        "low": 1.0e-2,
        "high": 10.0,
        "log": True,
        "coordinate": "effective",
        "scale_with_batch": {"key": "data.init_args.batch_size", "reference": 64},
    },
    "data.init_args.batch_size": {"choices": BATCH_SIZES},
}
REFERENCE_SEED = 10_000
MAX_TRIALS = 1000  # a guard: every search ends at its threshold or budget first


class RoundLog(Callback):
    """Appends one JSON line per validation round (examples seen, ``val_loss``, time) to ``path``.

    Also a line when the fit starts and when it ends (normally or by an exception, e.g. a pruned
    trial), with the examples the fit trained on. Stops the fit once ``val_loss <= threshold``.
    """

    def __init__(self, path: str, threshold: float | None = None) -> None:
        self.path, self.threshold = path, threshold
        self.examples = 0

    def _write(self, **record: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps({**record, "examples": self.examples, "t": time.time()}) + "\n")

    def on_fit_start(self, trainer, pl_module) -> None:
        self.examples = 0
        self._write(event="start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.examples += int(batch[0].shape[0])

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics["val_loss"])
        self._write(event="round", val_loss=value)
        if self.threshold is not None and value <= self.threshold:
            trainer.should_stop = True

    def on_fit_end(self, trainer, pl_module) -> None:
        self._write(event="end")

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._write(event="end")


# --- one search -----------------------------------------------------------------------------------


def quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _sweep_data(
    settings: dict[str, Any], search: dict[str, Any], log_path: str, threshold: float | None
) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(Path(settings["sweep_file"]).read_text(encoding="utf-8"))
    data["search"] = copy.deepcopy(search)
    data["model"]["init_args"]["channels"] = settings["channels"]
    trainer = data.setdefault("trainer", {})
    trainer["max_epochs"] = settings["max_epochs"]
    trainer["callbacks"] = [
        {"class_path": "search_efficiency.RoundLog", "init_args": {"path": log_path, "threshold": threshold}}
    ]
    return data


def _lightopt_study(
    method: str, seed: int, settings: dict[str, Any], log_path: str, threshold: float | None, root: str
):
    search = CHAPTER_SEARCH if method == "lightopt-chapter" else RAW_SEARCH
    data = _sweep_data(settings, search, log_path, threshold)
    data["study"]["seed"] = seed
    if method == "random":
        data["study"]["sampler"] = {"name": "random", "seed": seed}
        data["study"]["pruner"] = {"name": "none"}
    else:
        data["study"]["sampler"] = {**data["study"]["sampler"], "seed": seed}
    return lightopt_study(data, root)


def lightopt_study(data: dict[str, Any], root: str):
    """An in-memory study with the sampler and pruner of a sweep file's ``data``, and lightopt's objective."""
    from lightopt.sweep import spec as sweep_config
    from lightopt.sweep.trial import Objective

    sweep = sweep_config.parse(data)
    spec = sweep.study
    study = optuna.create_study(
        direction=spec.direction, sampler=spec.make_sampler(sweep.search), pruner=spec.make_pruner()
    )
    return study, Objective(sweep, root)


def _optuna_objective(seed: int, settings: dict[str, Any], log_path: str, threshold: float | None, root: str):
    """The hand-written objective of Optuna's PyTorch Lightning example, on the same model and schedule."""
    return optuna_objective(_sweep_data(settings, RAW_SEARCH, log_path, threshold), seed, log_path, threshold, root)


def class_from_path(path: str) -> type:
    """The class a ``class_path`` names (``module.Class``)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def fit_setting(data: dict[str, Any], lr: float, momentum: float, batch_size: int, seed: int, root: str, callbacks):
    """Train the sweep file's model on its data with one raw setting (SGD's lr and momentum, the batch size).

    Written as Optuna's PyTorch Lightning example writes its trials: the classes built by hand, a
    TensorBoard logger in ``root``, no checkpoints. Returns the fitted Trainer.
    """
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    trainer_args = {k: v for k, v in data["trainer"].items() if k != "callbacks"}
    L.seed_everything(seed, verbose=False)
    optimizer = copy.deepcopy(data["optimizer"])
    optimizer["init_args"].update(lr=lr, momentum=momentum)
    model = class_from_path(data["model"]["class_path"])(
        **data["model"].get("init_args", {}), optimizer=optimizer, lr_scheduler=data["lr_scheduler"]
    )
    datamodule = class_from_path(data["data"]["class_path"])(
        **{**data["data"].get("init_args", {}), "batch_size": batch_size}
    )
    trainer = L.Trainer(
        **trainer_args,
        logger=TensorBoardLogger(root, name="", version=f"seed_{seed}"),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer


def optuna_objective(data: dict[str, Any], seed: int, log_path: str, threshold: float | None, root: str):
    """Optuna's documented approach on the model, data, trainer and schedule of a sweep file's ``data``.

    TPESampler and MedianPruner with their defaults, optuna-integration's pruning callback on
    ``val_loss``, the raw space; the objective returns the last ``val_loss``.
    """
    from optuna_integration import PyTorchLightningPruningCallback

    from lightopt.sweep.spec import trial_seed

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1.0e-3, 1.0, log=True)
        momentum = trial.suggest_float("momentum", 0.0, 0.99)
        batch_size = trial.suggest_categorical("batch_size", BATCH_SIZES)
        callbacks = [RoundLog(log_path, threshold), PyTorchLightningPruningCallback(trial, monitor="val_loss")]
        trial_root = os.path.join(root, f"trial_{trial.number:04d}")
        trainer = fit_setting(data, lr, momentum, batch_size, trial_seed(seed, trial.number), trial_root, callbacks)
        return trainer.callback_metrics["val_loss"].item()

    return optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=optuna.pruners.MedianPruner()
    ), objective


def read_rounds(log_path: str, n_train: int) -> list[dict[str, Any]]:
    """Per trial, in order: ``{"epochs": trained, "rounds": [(epochs into the trial, val_loss, time)]}``."""
    trials: list[dict[str, Any]] = []
    if not os.path.exists(log_path):
        return trials
    with open(log_path, encoding="utf-8") as file:
        for line in file:
            record = json.loads(line)
            if record["event"] == "start":
                trials.append({"epochs": 0.0, "rounds": []})
            elif record["event"] == "round":
                trials[-1]["rounds"].append((record["examples"] / n_train, record["val_loss"], record["t"]))
                trials[-1]["epochs"] = record["examples"] / n_train
            else:
                trials[-1]["epochs"] = record["examples"] / n_train
    return trials


def summarize(trials: list[dict[str, Any]], threshold: float | None, start: float) -> dict[str, Any]:
    """When the threshold was first reached (epochs and seconds), the epochs spent, the best loss.

    ``curve`` lists ``[epochs spent, best val_loss so far]`` at each improvement, so the epochs to
    a looser threshold can be read from it afterwards (:func:`epochs_to`).
    """
    spent, reached, best, curve = 0.0, None, math.inf, []
    for trial in trials:
        for epochs, value, t in trial["rounds"]:
            if math.isfinite(value) and value < best:
                best = value
                curve.append([spent + epochs, value])
            if reached is None and threshold is not None and value <= threshold:
                reached = {"epochs": spent + epochs, "wall_s": t - start}
        spent += trial["epochs"]
    return {
        "reached": reached is not None,
        "epochs_to_threshold": reached and reached["epochs"],
        "wall_to_threshold_s": reached and reached["wall_s"],
        "epochs_spent": spent,
        "best_val_loss": best if math.isfinite(best) else None,
        "n_trials": len(trials),
        "curve": curve,
    }


def epochs_to(search: dict[str, Any], threshold: float) -> float:
    """Epochs the search spent until its best loss first fell to ``threshold``; ``inf`` if never."""
    return next((epochs for epochs, best in search["curve"] if best <= threshold), math.inf)


def run_search(
    method: str,
    seed: int,
    settings: dict[str, Any],
    threshold: float | None,
    budget_epochs: float | None,
    n_trials: int | None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One search; stops at the threshold, after ``budget_epochs`` or after ``n_trials``.

    ``params`` (lightopt methods only) are enqueued as the first trial: with ``n_trials=1`` this
    trains one setting with the seed ``trial_seed(seed, 0)``.
    """
    from lightopt.sweep.trial import TrialFailed

    quiet()
    torch.set_num_threads(1)
    n_train = settings["n_train"]
    with tempfile.TemporaryDirectory(prefix=f"search_efficiency_{method}_") as root:
        log_path = os.path.join(root, "rounds.jsonl")
        if method == "optuna":
            study, objective = _optuna_objective(seed, settings, log_path, threshold, root)
        else:
            study, objective = _lightopt_study(method, seed, settings, log_path, threshold, root)
        if params is not None:
            study.enqueue_trial(params)

        def stop_when_done(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            summary = summarize(read_rounds(log_path, n_train), threshold, start)
            if summary["reached"] or (budget_epochs is not None and summary["epochs_spent"] >= budget_epochs):
                study.stop()

        start = time.time()
        study.optimize(
            objective,
            n_trials=n_trials or MAX_TRIALS,
            catch=(TrialFailed,),
            callbacks=[stop_when_done],
            gc_after_trial=False,
        )
        wall = time.time() - start
        result = summarize(read_rounds(log_path, n_train), threshold, start)
        states = [t.state.name for t in study.trials]
        best = min(
            (t for t in study.trials if t.value is not None and math.isfinite(t.value)),
            key=lambda t: t.value,
            default=None,
        )
    return {
        "method": method,
        "seed": seed,
        **result,
        "wall_s": wall,
        "n_pruned": states.count("PRUNED"),
        "n_failed": states.count("FAIL"),
        "best_params": best.params if best else None,
    }


# --- statistics and output ------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile where a censored value is ``inf``; ``inf`` when it touches one.

    Example:
        >>> quantile([1, 2, 3, 4, math.inf], 0.5), quantile([1, 2, math.inf, math.inf, math.inf], 0.5)
        (3.0, inf)
    """
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    if (math.isinf(ordered[high]) and position > low) or math.isinf(ordered[low]):
        return math.inf
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def _epochs(rows: list[dict[str, Any]], threshold: float | None) -> list[float]:
    if threshold is None:
        return [s["epochs_to_threshold"] if s["reached"] else math.inf for s in rows]
    return [epochs_to(s, threshold) for s in rows]


def method_table(searches: list[dict[str, Any]], threshold: float | None = None) -> dict[str, dict[str, Any]]:
    """Per method: seeds that reached, median and IQR of the epochs (censored = inf), wall time.

    With ``threshold`` (looser than the run's), the epochs are read from each search's curve.
    """
    table = {}
    for method in METHODS:
        rows = [s for s in searches if s["method"] == method]
        if not rows:
            continue
        epochs = _epochs(rows, threshold)
        table[method] = {
            "seeds": len(rows),
            "reached": sum(math.isfinite(e) for e in epochs),
            "epochs_median": quantile(epochs, 0.5),
            "epochs_q1": quantile(epochs, 0.25),
            "epochs_q3": quantile(epochs, 0.75),
        }
        if threshold is None:  # the run's own threshold: the wall time and trial counts are known too
            walls = [s["wall_to_threshold_s"] if s["reached"] else math.inf for s in rows]
            table[method].update(
                wall_median_s=quantile(walls, 0.5),
                epochs_spent_total=sum(s["epochs_spent"] for s in rows),
                trials_median=float(np.median([s["n_trials"] for s in rows])),
            )
    return table


def _fmt(value: float, digits: int = 1) -> str:
    return "censored" if math.isinf(value) else f"{value:.{digits}f}"


def format_table(table: dict[str, dict[str, Any]], budget: float) -> str:
    lines = [
        "| method | reached | epochs to threshold: median [IQR] | wall to threshold: median | trials (median) |",
        "|---|---|---|---|---|",
    ]
    for method, row in table.items():
        wall = (
            "-"
            if "wall_median_s" not in row
            else _fmt(row["wall_median_s"], 0) + (" s" if math.isfinite(row["wall_median_s"]) else "")
        )
        trials = f"{row['trials_median']:.0f}" if "trials_median" in row else "-"
        lines.append(
            f"| {method} | {row['reached']}/{row['seeds']} | {_fmt(row['epochs_median'])} "
            f"[{_fmt(row['epochs_q1'])}, {_fmt(row['epochs_q3'])}] | {wall} | {trials} |"
        )
    lines.append(f"(censored: not reached within the budget of {budget:g} epochs)")
    return "\n".join(lines)


def median_ratio(base: Sequence[float], mine: Sequence[float], resamples: int = 2000) -> dict[str, Any]:
    """``median(base) / median(mine)`` over paired searches, with a bootstrap 95% interval (pairs resampled together).

    A censored search counts as ``inf``: a ratio is ``inf`` when only ``base``'s median is censored,
    0 when only ``mine``'s is, and undefined (None; such resamples are left out and counted) when both are.

    Example:
        >>> median_ratio([4, 6, 8], [2, 3, 4])["ratio"], median_ratio([4, math.inf, math.inf], [1, 2, 3])["ratio"]
        (2.0, inf)
    """

    def ratio(b: float, m: float) -> float | None:
        if math.isinf(b) and math.isinf(m):
            return None
        return math.inf if math.isinf(b) else b / m

    base_a, mine_a = np.array(base, dtype=float), np.array(mine, dtype=float)
    rng = np.random.default_rng(0)
    draws = [
        ratio(quantile(base_a[i], 0.5), quantile(mine_a[i], 0.5))
        for i in rng.integers(0, len(base_a), (resamples, len(base_a)))
    ]
    defined = sorted(d for d in draws if d is not None)
    interval = [defined[int(0.025 * len(defined))], defined[max(int(0.975 * len(defined)) - 1, 0)]] if defined else None
    return {
        "ratio": ratio(quantile(base_a, 0.5), quantile(mine_a, 0.5)),
        "ci95": interval,
        "undefined_resamples": len(draws) - len(defined),
        "seeds": len(base_a),
    }


def ratios(searches: list[dict[str, Any]], threshold: float | None = None, resamples: int = 2000) -> dict[str, Any]:
    """Optuna's median epochs over each lightopt method's, with a bootstrap 95% interval (:func:`median_ratio`).

    Searches are paired by seed (the same seed draws the same first trials in every TPE method)
    and the seeds are resampled together.
    """
    out: dict[str, Any] = {}
    by_seed = {m: {s["seed"]: s for s in searches if s["method"] == m} for m in METHODS}
    for method in ("lightopt-raw", "lightopt-chapter"):
        seeds = sorted(set(by_seed["optuna"]) & set(by_seed[method]))
        if not seeds:
            continue
        base = _epochs([by_seed["optuna"][k] for k in seeds], threshold)
        mine = _epochs([by_seed[method][k] for k in seeds], threshold)
        out[method] = median_ratio(base, mine, resamples)
    return out


def format_ratios(rows: dict[str, Any]) -> str:
    def fmt(value: float | None) -> str:
        return "undefined" if value is None else "inf" if math.isinf(value) else f"{value:.2f}"

    lines = []
    for method, row in rows.items():
        interval = "no interval" if row["ci95"] is None else f"[{fmt(row['ci95'][0])}, {fmt(row['ci95'][1])}]"
        undefined = f", {row['undefined_resamples']} resamples undefined" if row["undefined_resamples"] else ""
        lines.append(
            f"optuna / {method} (median epochs, {row['seeds']} paired seeds): {fmt(row['ratio'])} {interval}{undefined}"
        )
    return "\n".join(lines)


def plot(searches: list[dict[str, Any]], budget: float, tolerance: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    grid = np.linspace(0, budget, 400)
    for method in METHODS:
        rows = [s for s in searches if s["method"] == method]
        if not rows:
            continue
        reached = np.array([s["epochs_to_threshold"] if s["reached"] else np.inf for s in rows])
        ax.step(grid, [(reached <= x).mean() for x in grid], where="post", label=method)
    ax.set_xlabel("training epochs spent by the search")
    ax.set_ylabel(f"fraction of seeds within {tolerance:.0%} of the reference")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ax.set_title("Digits ConvNet, SGD + momentum: time to a near-best validation loss", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- driver ---------------------------------------------------------------------------------------


def _run_all(jobs: list[tuple], workers: int, partial: Path) -> list[dict[str, Any]]:
    """Run the searches; each result is also appended to ``partial`` (JSON lines) as it comes."""
    results = []
    if workers == 1:
        for job in jobs:
            results.append(run_search(*job))
            _progress(results[-1], partial)
        return results
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(run_search, *job) for job in jobs]
        for future in concurrent.futures.as_completed(futures):
            results.append(future.result())
            _progress(results[-1], partial)
    return results


def _progress(result: dict[str, Any], partial: Path) -> None:
    with open(partial, "a", encoding="utf-8") as file:
        file.write(json.dumps(result) + "\n")
    reached = f"reached after {result['epochs_to_threshold']:.1f} epochs" if result["reached"] else "not reached"
    print(
        f"  {result['method']:>16} seed {result['seed']}: {reached}; {result['epochs_spent']:.1f} epochs, "
        f"{result['n_trials']} trials, best {result['best_val_loss']}, {result['wall_s']:.0f} s",
        flush=True,
    )


def reference(settings: dict[str, Any], args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """The two long searches (cached), then their best settings retrained with other seeds.

    ``best_val_loss`` is the lowest ``val_loss`` of any round of the 2 x ``--reference-trials``
    trials: a minimum over hundreds of noisy values, which one lucky initialization can set.
    ``value``, the reference the threshold is built on, is the best setting's typical loss: each
    search's best parameters are trained again with ``--reference-seeds`` other seeds (the full
    trial, no pruning), each run scored by its lowest round, and ``value`` is the lower of the two
    medians.
    """
    wanted = {"trials": args.reference_trials, **{k: settings[k] for k in ("channels", "max_epochs")}}
    cached = None
    if args.reuse_reference and path.exists():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("settings") == wanted:
            print(
                f"reference: reusing the searches in {path} (best val_loss {cached['best_val_loss']:.5f})", flush=True
            )
        else:
            print(f"reference: {path} was made with other settings; running it again", flush=True)
            cached = None
    if cached is None:
        print(f"reference: 2 TPE searches of {args.reference_trials} trials", flush=True)
        jobs = [
            (method, REFERENCE_SEED + i, settings, None, None, args.reference_trials)
            for i, method in enumerate(("lightopt-raw", "lightopt-chapter"))
        ]
        searches = _run_all(jobs, min(args.workers, 2), path.with_suffix(".partial.jsonl"))
        best = min(searches, key=lambda s: s["best_val_loss"] if s["best_val_loss"] is not None else math.inf)
        cached = {
            "settings": wanted,
            "best_val_loss": best["best_val_loss"],
            "best_method": best["method"],
            "best_params": best["best_params"],
            "searches": searches,
        }
    checks = cached.get("settings_check")
    if not checks or any(len(c["losses"]) != args.reference_seeds for c in checks):
        print(f"reference: each search's best setting trained with {args.reference_seeds} more seeds", flush=True)
        candidates = [(s["method"], s["best_params"]) for s in cached["searches"] if s["best_params"]]
        jobs = [
            (method, REFERENCE_SEED + 100 + k, settings, None, None, 1, params)
            for method, params in candidates
            for k in range(args.reference_seeds)
        ]
        runs = _run_all(jobs, args.workers, path.with_suffix(".partial.jsonl"))
        checks = []
        for method, params in candidates:
            losses = sorted(
                r["best_val_loss"] for r in runs if r["method"] == method and r["best_val_loss"] is not None
            )
            checks.append(
                {
                    "method": method,
                    "params": params,
                    "losses": losses,
                    "median": float(np.median(losses)),
                    "spread": (losses[-1] - losses[0]) / float(np.median(losses)),
                }
            )
        cached["settings_check"] = checks
    best_check = min(cached["settings_check"], key=lambda c: c["median"])
    cached["value"] = best_check["median"]
    path.write_text(json.dumps(cached, indent=1), encoding="utf-8")
    for c in cached["settings_check"]:
        print(
            f"reference: {c['method']}'s best setting: median {c['median']:.5f} over {len(c['losses'])} seeds "
            f"(range {c['losses'][0]:.5f} to {c['losses'][-1]:.5f})",
            flush=True,
        )
    return cached


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="searches per method (default 20)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds are FIRST_SEED, FIRST_SEED + 1, ... (default 0)"
    )
    parser.add_argument(
        "--sweep-file",
        default=str(SWEEP_FILE),
        help="the sweep file whose model, data, trainer, schedule, sampler and pruner are used "
        "(default sweeps/digits_sgd.yaml)",
    )
    parser.add_argument("--workers", type=int, default=2, help="searches run in parallel processes (default 2)")
    parser.add_argument(
        "--budget-epochs",
        type=float,
        default=400.0,
        help="training epochs per search before it is censored (default 400)",
    )
    parser.add_argument("--reference-trials", type=int, default=80, help="trials of each reference search")
    parser.add_argument(
        "--reference-value",
        choices=("lowest", "setting-median"),
        default="lowest",
        help="the threshold's base: the lowest val_loss of any round of the reference searches "
        "(default), or the median of their best setting retrained with other seeds",
    )
    parser.add_argument(
        "--reference-seeds",
        type=int,
        default=10,
        help="seeds each reference search's best setting is retrained with (default 10)",
    )
    parser.add_argument("--tolerance", type=float, default=0.02, help="threshold = (1 + tolerance) x reference (0.02)")
    parser.add_argument(
        "--looser",
        type=float,
        nargs="*",
        default=[0.05, 0.1],
        help="also report looser tolerances, read from the same searches (0.05 0.1)",
    )
    parser.add_argument(
        "--reuse-reference", action="store_true", help="reuse the cached reference if its settings match"
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out-dir", default=str(_HERE / "results"), help="where the JSON, CSV and PNG go")
    parser.add_argument(
        "--summarize",
        metavar="JSON",
        help="run nothing: read the searches from a results JSON "
        "this script wrote and write the tables, CSV and plot again (with this run's --looser)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds: 1 epoch per trial, tiny budgets")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    check_at_least(
        parser,
        [
            ("seeds", args.seeds, 1),
            ("workers", args.workers, 1),
            ("reference-trials", args.reference_trials, 1),
            ("reference-seeds", args.reference_seeds, 1),
        ],
    )
    if not args.budget_epochs > 0 or not args.tolerance >= 0:
        parser.error(
            f"`--budget-epochs` must be > 0 and `--tolerance` >= 0, but got budget_epochs={args.budget_epochs}, "
            f"tolerance={args.tolerance}."
        )
    out = Path(args.out_dir)
    if args.summarize:
        try:
            report = json.loads(Path(args.summarize).read_text(encoding="utf-8"))
            report["base"]  # written by this version of the script
        except (OSError, ValueError, KeyError) as error:
            parser.error(
                f"`--summarize` must name a results JSON of this script, but reading {args.summarize} failed: {error!r}"
            )
        out.mkdir(parents=True, exist_ok=True)
        write_report(report, args.looser, out, Path(args.summarize).stem)
        return 0
    quiet()
    from examples.digits import DigitsDataModule

    datamodule = DigitsDataModule()
    datamodule.setup()
    settings = {"channels": 8, "max_epochs": 6, "n_train": len(datamodule.train_set), "sweep_file": args.sweep_file}
    if args.quick:
        settings.update(channels=4, max_epochs=1)
    out.mkdir(parents=True, exist_ok=True)
    stem = "search_efficiency_quick" if args.quick else "search_efficiency"
    info = machine_info(workers=args.workers)
    print(f"{info['cpu']}; {args.workers} parallel searches, 1 torch thread each; {settings}", flush=True)

    started = time.time()
    ref = reference(settings, args, out / f"{stem}_reference.json")
    base = ref["best_val_loss"] if args.reference_value == "lowest" else ref["value"]
    threshold = base * (1 + args.tolerance)
    print(
        f"threshold: val_loss <= {threshold:.5f} ({args.tolerance:.0%} above the {args.reference_value} reference "
        f"{base:.5f}; lowest round {ref['best_val_loss']:.5f}, best setting's median {ref['value']:.5f})",
        flush=True,
    )
    jobs = [
        (method, seed, settings, threshold, args.budget_epochs, None)
        for seed in range(args.first_seed, args.first_seed + args.seeds)
        for method in args.methods
    ]
    partial = out / f"{stem}.partial.jsonl"
    partial.unlink(missing_ok=True)
    searches = sorted(_run_all(jobs, args.workers, partial), key=lambda s: (METHODS.index(s["method"]), s["seed"]))
    report = {
        "settings": {
            **settings,
            "budget_epochs": args.budget_epochs,
            "tolerance": args.tolerance,
            "seeds": args.seeds,
            "first_seed": args.first_seed,
            "workers": args.workers,
            "raw_search": RAW_SEARCH,
            "chapter_search": CHAPTER_SEARCH,
        },
        "machine": info,
        "reference": {k: v for k, v in ref.items() if k != "searches"},
        "reference_seeds": args.reference_seeds,
        "reference_value": args.reference_value,
        "base": base,
        "threshold": threshold,
        "searches": searches,
        "wall_total_s": time.time() - started,
    }
    write_report(report, args.looser, out, stem)
    return 0


def write_report(report: dict[str, Any], looser: Sequence[float], out: Path, stem: str) -> None:
    """Add the tables and ratios to ``report``; write the JSON, CSV and PNG; print the tables."""
    searches, base = report["searches"], report["base"]
    budget, tolerance = report["settings"]["budget_epochs"], report["settings"]["tolerance"]
    report["table"] = method_table(searches)
    report["ratio_optuna_over"] = ratios(searches)
    report["looser"] = {
        f"{t:g}": {
            "table": method_table(searches, base * (1 + t)),
            "ratio_optuna_over": ratios(searches, base * (1 + t)),
        }
        for t in looser
        if t > tolerance
    }
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    with open(out / f"{stem}.csv", "w", newline="", encoding="utf-8") as file:
        fields = [
            "method",
            "seed",
            "reached",
            "epochs_to_threshold",
            "wall_to_threshold_s",
            "epochs_spent",
            "wall_s",
            "n_trials",
            "n_pruned",
            "n_failed",
            "best_val_loss",
        ]
        writer = csv.DictWriter(file, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(searches)
    plot(searches, budget, tolerance, out / f"{stem}.png")
    print(format_table(report["table"], budget))
    print(format_ratios(report["ratio_optuna_over"]))
    for t, tables in report["looser"].items():
        print(f"\nwithin {float(t):.0%} of the reference (read from the same searches):")
        print(format_table(tables["table"], budget))
        print(format_ratios(tables["ratio_optuna_over"]))
    print(f"results: {out / stem}.{{json,csv,png}}; searches took {report['wall_total_s']:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
