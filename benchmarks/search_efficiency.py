"""Search efficiency: training epochs a search spends before it first reaches a near-best validation loss.

The task is the README's main sweep, ``sweeps/digits_sgd.yaml``: SGD with momentum (Algorithm 8.2)
and LinearDecay on ``examples.digits.DigitsConvNet``, 6 epochs per trial, two validation rounds
per epoch, searching learning rate, momentum and batch size. The model, data, trainer and
schedule come from that file; the search block and the method come from here.

1. **Reference.** Two long TPE searches with pruning (one per lightopt coordinate system, so
   neither is favoured), ``--reference-trials`` each. The reference loss is the lowest
   ``val_loss`` seen in any validation round of either; the threshold is ``(1 + --tolerance)``
   times it (2% by default). Cached in ``search_efficiency_reference.json`` and reused with
   ``--reuse-reference`` when its settings match.
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

Usage::

    python benchmarks/search_efficiency.py [--seeds 5] [--workers 2] [--reuse-reference] [--quick]

See ``benchmarks/README.md`` for the results and how to read them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import csv
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

from _measure import machine_info  # noqa: E402

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
    "optimizer.init_args.lr": {"low": 1.0e-2, "high": 10.0, "log": True, "coordinate": "effective",
                               "scale_with_batch": {"key": "data.init_args.batch_size", "reference": 64}},
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


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _sweep_data(settings: dict[str, Any], search: dict[str, Any], log_path: str, threshold: float | None) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(SWEEP_FILE.read_text(encoding="utf-8"))
    data["search"] = copy.deepcopy(search)
    data["model"]["init_args"]["channels"] = settings["channels"]
    trainer = data.setdefault("trainer", {})
    trainer["max_epochs"] = settings["max_epochs"]
    trainer["callbacks"] = [{"class_path": "search_efficiency.RoundLog",
                             "init_args": {"path": log_path, "threshold": threshold}}]
    return data


def _lightopt_study(method: str, seed: int, settings: dict[str, Any], log_path: str, threshold: float | None, root: str):
    from lightopt.sweep import config as sweep_config
    from lightopt.sweep.objective import Objective

    search = CHAPTER_SEARCH if method == "lightopt-chapter" else RAW_SEARCH
    data = _sweep_data(settings, search, log_path, threshold)
    data["study"]["seed"] = seed
    if method == "random":
        data["study"]["sampler"] = {"name": "random", "seed": seed}
        data["study"]["pruner"] = {"name": "none"}
    else:
        data["study"]["sampler"] = {**data["study"]["sampler"], "seed": seed}
    sweep = sweep_config.parse(data)
    spec = sweep.study
    study = optuna.create_study(direction=spec.direction, sampler=spec.make_sampler(sweep.search),
                                pruner=spec.make_pruner())
    return study, Objective(sweep, root)


def _optuna_objective(seed: int, settings: dict[str, Any], log_path: str, threshold: float | None, root: str):
    """The hand-written objective of Optuna's PyTorch Lightning example, on the same model and schedule."""
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger
    from optuna_integration import PyTorchLightningPruningCallback

    from examples.digits import DigitsConvNet, DigitsDataModule
    from lightopt.sweep.objective import trial_seed

    data = _sweep_data(settings, RAW_SEARCH, log_path, threshold)
    trainer_args = {k: v for k, v in data["trainer"].items() if k != "callbacks"}

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1.0e-3, 1.0, log=True)
        momentum = trial.suggest_float("momentum", 0.0, 0.99)
        batch_size = trial.suggest_categorical("batch_size", BATCH_SIZES)
        L.seed_everything(trial_seed(seed, trial.number), verbose=False)
        optimizer = copy.deepcopy(data["optimizer"])
        optimizer["init_args"].update(lr=lr, momentum=momentum)
        model = DigitsConvNet(**data["model"]["init_args"], optimizer=optimizer, lr_scheduler=data["lr_scheduler"])
        datamodule = DigitsDataModule(batch_size=batch_size)
        trainer = L.Trainer(
            **trainer_args,
            logger=TensorBoardLogger(root, name="", version=f"trial_{trial.number:04d}"),
            enable_progress_bar=False, enable_model_summary=False,
            callbacks=[RoundLog(log_path, threshold), PyTorchLightningPruningCallback(trial, monitor="val_loss")],
        )
        trainer.fit(model, datamodule=datamodule)
        return trainer.callback_metrics["val_loss"].item()

    return optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed),
                               pruner=optuna.pruners.MedianPruner()), objective


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
    return {"reached": reached is not None, "epochs_to_threshold": reached and reached["epochs"],
            "wall_to_threshold_s": reached and reached["wall_s"], "epochs_spent": spent,
            "best_val_loss": best if math.isfinite(best) else None, "n_trials": len(trials), "curve": curve}


def epochs_to(search: dict[str, Any], threshold: float) -> float:
    """Epochs the search spent until its best loss first fell to ``threshold``; ``inf`` if never."""
    return next((epochs for epochs, best in search["curve"] if best <= threshold), math.inf)


def run_search(method: str, seed: int, settings: dict[str, Any], threshold: float | None,
               budget_epochs: float | None, n_trials: int | None) -> dict[str, Any]:
    """One search; stops at the threshold, after ``budget_epochs`` or after ``n_trials``."""
    from lightopt.sweep.objective import TrialFailed

    _quiet()
    torch.set_num_threads(1)
    n_train = settings["n_train"]
    with tempfile.TemporaryDirectory(prefix=f"search_efficiency_{method}_") as root:
        log_path = os.path.join(root, "rounds.jsonl")
        if method == "optuna":
            study, objective = _optuna_objective(seed, settings, log_path, threshold, root)
        else:
            study, objective = _lightopt_study(method, seed, settings, log_path, threshold, root)

        def stop_when_done(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            summary = summarize(read_rounds(log_path, n_train), threshold, start)
            if summary["reached"] or (budget_epochs is not None and summary["epochs_spent"] >= budget_epochs):
                study.stop()

        start = time.time()
        study.optimize(objective, n_trials=n_trials or MAX_TRIALS, catch=(TrialFailed,),
                       callbacks=[stop_when_done], gc_after_trial=False)
        wall = time.time() - start
        result = summarize(read_rounds(log_path, n_train), threshold, start)
        states = [t.state.name for t in study.trials]
        best = min((t for t in study.trials if t.value is not None and math.isfinite(t.value)),
                   key=lambda t: t.value, default=None)
    return {"method": method, "seed": seed, **result, "wall_s": wall,
            "n_pruned": states.count("PRUNED"), "n_failed": states.count("FAIL"),
            "best_params": best.params if best else None}


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
    if math.isinf(ordered[high]) and position > low or math.isinf(ordered[low]):
        return math.inf
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def method_table(searches: list[dict[str, Any]], threshold: float | None = None) -> dict[str, dict[str, Any]]:
    """Per method: seeds that reached, median and IQR of the epochs (censored = inf), wall time.

    With ``threshold`` (looser than the run's), the epochs are read from each search's curve.
    """
    table = {}
    for method in METHODS:
        rows = [s for s in searches if s["method"] == method]
        if not rows:
            continue
        if threshold is not None:
            epochs = [epochs_to(s, threshold) for s in rows]
            table[method] = {"seeds": len(rows), "reached": sum(math.isfinite(e) for e in epochs),
                             "epochs_median": quantile(epochs, 0.5), "epochs_q1": quantile(epochs, 0.25),
                             "epochs_q3": quantile(epochs, 0.75)}
            continue
        epochs = [s["epochs_to_threshold"] if s["reached"] else math.inf for s in rows]
        walls = [s["wall_to_threshold_s"] if s["reached"] else math.inf for s in rows]
        table[method] = {
            "seeds": len(rows), "reached": sum(s["reached"] for s in rows),
            "epochs_median": quantile(epochs, 0.5), "epochs_q1": quantile(epochs, 0.25),
            "epochs_q3": quantile(epochs, 0.75), "wall_median_s": quantile(walls, 0.5),
            "epochs_spent_total": sum(s["epochs_spent"] for s in rows),
            "trials_median": float(np.median([s["n_trials"] for s in rows])),
        }
    return table


def _fmt(value: float, digits: int = 1) -> str:
    return "censored" if math.isinf(value) else f"{value:.{digits}f}"


def format_table(table: dict[str, dict[str, Any]], budget: float) -> str:
    lines = ["| method | reached | epochs to threshold: median [IQR] | wall to threshold: median | trials (median) |",
             "|---|---|---|---|---|"]
    for method, row in table.items():
        wall = f"{_fmt(row['wall_median_s'], 0)} s" if "wall_median_s" in row else "-"
        trials = f"{row['trials_median']:.0f}" if "trials_median" in row else "-"
        lines.append(
            f"| {method} | {row['reached']}/{row['seeds']} | {_fmt(row['epochs_median'])} "
            f"[{_fmt(row['epochs_q1'])}, {_fmt(row['epochs_q3'])}] | {wall} | {trials} |"
        )
    lines.append(f"(censored: not reached within the budget of {budget:g} epochs)")
    return "\n".join(lines)


def ratios(table: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Optuna's median epochs over each lightopt method's (inf/inf and x/inf are None)."""
    out = {}
    base = table.get("optuna", {}).get("epochs_median")
    for method in ("lightopt-raw", "lightopt-chapter"):
        mine = table.get(method, {}).get("epochs_median")
        if base is None or mine is None or math.isinf(mine):
            out[method] = None
        else:
            out[method] = base / mine  # inf when Optuna's median is censored: at least budget/mine
    return out


def plot(searches: list[dict[str, Any]], budget: float, path: Path) -> None:
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
    ax.set_ylabel("fraction of seeds within 2% of the reference")
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
    print(f"  {result['method']:>16} seed {result['seed']}: {reached}; {result['epochs_spent']:.1f} epochs, "
          f"{result['n_trials']} trials, best {result['best_val_loss']}, {result['wall_s']:.0f} s", flush=True)


def reference(settings: dict[str, Any], args: argparse.Namespace, path: Path) -> dict[str, Any]:
    wanted = {"trials": args.reference_trials, **{k: settings[k] for k in ("channels", "max_epochs")}}
    if args.reuse_reference and path.exists():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("settings") == wanted:
            print(f"reference: reusing {path} (best val_loss {cached['best_val_loss']:.5f})", flush=True)
            return cached
        print(f"reference: {path} was made with other settings; running it again", flush=True)
    print(f"reference: 2 TPE searches of {args.reference_trials} trials", flush=True)
    jobs = [(method, REFERENCE_SEED + i, settings, None, None, args.reference_trials)
            for i, method in enumerate(("lightopt-raw", "lightopt-chapter"))]
    searches = _run_all(jobs, min(args.workers, 2), path.with_suffix(".partial.jsonl"))
    best = min(searches, key=lambda s: s["best_val_loss"] if s["best_val_loss"] is not None else math.inf)
    result = {"settings": wanted, "best_val_loss": best["best_val_loss"], "best_method": best["method"],
              "best_params": best["best_params"], "searches": searches}
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="searches per method (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="searches run in parallel processes (default 2)")
    parser.add_argument("--budget-epochs", type=float, default=120.0, help="training epochs per search before it is censored")
    parser.add_argument("--reference-trials", type=int, default=80, help="trials of each reference search")
    parser.add_argument("--tolerance", type=float, default=0.02, help="threshold = (1 + tolerance) x reference (0.02)")
    parser.add_argument("--looser", type=float, nargs="*", default=[0.05, 0.1],
                        help="also report looser tolerances, read from the same searches (0.05 0.1)")
    parser.add_argument("--reuse-reference", action="store_true", help="reuse the cached reference if its settings match")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out-dir", default=str(_HERE / "results"), help="where the JSON, CSV and PNG go")
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds: 1 epoch per trial, tiny budgets")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for name, low in (("seeds", 1), ("workers", 1), ("reference_trials", 1)):
        if getattr(args, name) < low:
            parser.error(f"`--{name.replace('_', '-')}` must be >= {low}, but got {name}={getattr(args, name)}.")
    if not args.budget_epochs > 0 or not args.tolerance >= 0:
        parser.error(f"`--budget-epochs` must be > 0 and `--tolerance` >= 0, but got budget_epochs={args.budget_epochs}, "
                     f"tolerance={args.tolerance}.")
    _quiet()
    from examples.digits import DigitsDataModule

    datamodule = DigitsDataModule()
    datamodule.setup()
    settings = {"channels": 8, "max_epochs": 6, "n_train": len(datamodule.train_set)}
    if args.quick:
        settings.update(channels=4, max_epochs=1)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "search_efficiency_quick" if args.quick else "search_efficiency"
    info = machine_info(workers=args.workers)
    print(f"{info['cpu']}; {args.workers} parallel searches, 1 torch thread each; {settings}", flush=True)

    started = time.time()
    ref = reference(settings, args, out / f"{stem}_reference.json")
    threshold = ref["best_val_loss"] * (1 + args.tolerance)
    print(f"threshold: val_loss <= {threshold:.5f} ({args.tolerance:.0%} above {ref['best_val_loss']:.5f})", flush=True)
    jobs = [(method, seed, settings, threshold, args.budget_epochs, None)
            for seed in range(args.seeds) for method in args.methods]
    partial = out / f"{stem}.partial.jsonl"
    partial.unlink(missing_ok=True)
    searches = sorted(_run_all(jobs, args.workers, partial), key=lambda s: (METHODS.index(s["method"]), s["seed"]))
    table = method_table(searches)
    looser = {f"{t:g}": method_table(searches, ref["best_val_loss"] * (1 + t)) for t in args.looser if t > args.tolerance}
    report = {"settings": {**settings, "budget_epochs": args.budget_epochs, "tolerance": args.tolerance,
                           "seeds": args.seeds, "workers": args.workers, "raw_search": RAW_SEARCH,
                           "chapter_search": CHAPTER_SEARCH},
              "machine": info, "reference": {k: v for k, v in ref.items() if k != "searches"},
              "threshold": threshold, "table": table, "ratio_optuna_over": ratios(table),
              "looser": {t: {"table": tab, "ratio_optuna_over": ratios(tab)} for t, tab in looser.items()},
              "searches": searches,
              "wall_total_s": time.time() - started}
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    with open(out / f"{stem}.csv", "w", newline="", encoding="utf-8") as file:
        fields = ["method", "seed", "reached", "epochs_to_threshold", "wall_to_threshold_s", "epochs_spent",
                  "wall_s", "n_trials", "n_pruned", "n_failed", "best_val_loss"]
        writer = csv.DictWriter(file, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(searches)
    plot(searches, args.budget_epochs, out / f"{stem}.png")
    print(format_table(table, args.budget_epochs))
    for t, tab in looser.items():
        print(f"\nwithin {float(t):.0%} of the reference (read from the same searches):")
        print(format_table(tab, args.budget_epochs))
    for method, ratio in report["ratio_optuna_over"].items():
        text = "n/a (censored)" if ratio is None else ("Optuna censored" if math.isinf(ratio) else f"{ratio:.2f}x")
        print(f"optuna / {method} (median epochs): {text}")
    print(f"results: {out / stem}.{{json,csv,png}}; total {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
