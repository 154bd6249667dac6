"""Time the overhead of each lightopt callback on a real Lightning fit of the digits convnet.

Each case is a fit of ``examples.digits.DigitsConvNet`` (default settings: SGD with momentum 0.9,
batch normalization) on ``DigitsDataModule``, once without the callback (A) and once with it (B).
Both arms use the same seed, the same model initialization, the same data in the same order, a
logger in a fresh temporary directory, no checkpointing, no progress bar and no model summary.
Only ``trainer.fit`` is timed: the datamodule is built once and its tensors reused, and the
Trainer, the model and the callback are built before the clock starts. Rounds go over every
case in turn (the first case rotates from round to round) and alternate the order within a pair
(A B, then B A), so drift in the machine's load falls on both arms. Reported per case: the median
wall time of a fit with and without, the ratio of medians with/without with a paired bootstrap
95% interval over rounds, the median and interquartile range of the per-round ratios, the ratio
of median CPU times (``time.process_time``, less sensitive to other jobs on the machine), and
the overhead per fit. Since a few percent of a fit is within the noise of a shared machine,
separate untimed fits also add up the wall time spent inside the callback's own hooks: a precise
lower bound on its overhead (it misses only the work it causes elsewhere, such as Lightning
handling the values it logs), reported per fit and per unit of the callback's work.

Usage::

    python benchmarks/callback_overhead.py [--rounds N] [--quick] [--json out.json]

See ``benchmarks/README.md`` for the results and how to read them.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

try:
    from examples.digits import DigitsConvNet, DigitsDataModule
except ImportError:  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from examples.digits import DigitsConvNet, DigitsDataModule

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _measure

from lightopt.callbacks import EarlyStopping, GradientClipping, GradientMonitor, Initialization, PolyakAveraging

TARGET = 1.03
LOG_EVERY_N_STEPS = 50  # the Trainer's, for both arms (Lightning's default)

Factory = Callable[[], list[Callback]]


@dataclass(frozen=True)
class Case:
    """A callback configuration, how many times per fit it does its work, and whether the target applies."""

    name: str
    make: Factory  # fresh callback instances for one fit
    events: Callable[[int, int], int]  # (steps, validations) -> units of work per fit
    unit: str
    target: bool
    note: str = ""


def _curvature_monitor() -> type[Callback] | str:
    """The ``CurvatureMonitor`` class, or why it cannot be imported."""
    try:
        from lightopt.callbacks.curvature_monitor import CurvatureMonitor
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return CurvatureMonitor


def _cases(curvature_every: Sequence[int]) -> tuple[list[Case], list[str]]:
    every = LOG_EVERY_N_STEPS
    cases = [
        Case(
            "control: no callback vs no callback",
            lambda: [],
            lambda s, v: s,
            "step",
            True,
            "the same fit on both sides: its distance from 1.00 is this run's bias and noise floor",
        ),
        Case(
            "GradientMonitor()",
            lambda: [GradientMonitor()],
            lambda s, v: s // every,
            "logging step",
            True,
            f"follows Trainer(log_every_n_steps={every})",
        ),
        Case(
            "GradientMonitor(check_every_step=True)",
            lambda: [GradientMonitor(check_every_step=True)],
            lambda s, v: s,
            "step",
            False,
        ),
        Case(
            "EarlyStopping('val_loss', patience=1000)",
            lambda: [EarlyStopping("val_loss", patience=1000)],
            lambda s, v: v,
            "validation",
            True,
            "restore_best_weights=True (the default); the patience keeps both arms to the same epochs",
        ),
        Case("Initialization()", lambda: [Initialization()], lambda s, v: 1, "fit", True),
        Case(
            "PolyakAveraging()",
            lambda: [PolyakAveraging()],
            lambda s, v: s,
            "step",
            True,
            "EMA, decay 0.999, every step; swaps θ̂ in for each validation",
        ),
        Case("GradientClipping(clip_val=1.0)", lambda: [GradientClipping(clip_val=1.0)], lambda s, v: s, "step", False),
    ]
    skipped: list[str] = []
    monitor = _curvature_monitor()
    for n in curvature_every:
        name = f"CurvatureMonitor(every_n_steps={n})"
        if isinstance(monitor, str):
            skipped.append(f"{name} ({monitor})")
            continue
        cases.append(
            Case(
                name,
                lambda n=n, cls=monitor: [cls(every_n_steps=n)],
                lambda s, v, n=n: (s - 1) // n + 1 if s else 0,
                "measurement",
                False,
                "re-runs training_step, one double backward per measurement",
            )
        )
    return cases, skipped


# ---------------------------------------------------------------------------------------------
# One fit


@dataclass(frozen=True)
class Settings:
    epochs: int
    batch_size: int
    logger: str
    seed: int


class _Fitter:
    """Builds and times one fit; every fit writes its logs to a directory of its own."""

    def __init__(self, settings: Settings, root: str) -> None:
        self.settings = settings
        self.root = root
        self.count = 0
        self.datamodule = DigitsDataModule(batch_size=settings.batch_size, seed=settings.seed)
        self.datamodule.setup()  # load and split once; every fit reuses the tensors

    def __call__(self, callbacks: list[Callback]) -> tuple[float, float, int]:
        """Wall seconds, CPU seconds and optimizer steps of one ``trainer.fit``."""
        s = self.settings
        self.count += 1
        save_dir = os.path.join(self.root, f"fit{self.count:05d}")
        if s.logger == "tensorboard":
            logger: Any = TensorBoardLogger(save_dir, name="digits", version=0)
        else:
            logger = CSVLogger(save_dir, name="digits", version=0)
        L.seed_everything(s.seed, verbose=False)
        model = DigitsConvNet()
        trainer = L.Trainer(
            max_epochs=s.epochs,
            accelerator="cpu",
            devices=1,
            deterministic=True,
            logger=logger,
            callbacks=callbacks,
            log_every_n_steps=LOG_EVERY_N_STEPS,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=save_dir,
        )
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.fit(model, datamodule=self.datamodule)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return wall, cpu, trainer.global_step


# ---------------------------------------------------------------------------------------------
# Timing


def _time_hooks(callbacks: list[Callback], spent: list[float]) -> None:
    """Make every hook a callback overrides add its wall time to ``spent[0]``.

    The timed hooks are instance attributes, which shadow the class's.
    """
    for callback in callbacks:
        for name in dir(Callback):
            if not (name.startswith("on_") or name in ("setup", "teardown")) or not callable(getattr(Callback, name)):
                continue
            if getattr(type(callback), name) is getattr(Callback, name):
                continue  # not overridden: Lightning's no-op

            # The default binds this loop's hook now (a closure would see the last one): on purpose.
            def timed(*args: Any, _hook: Callable[..., Any] = getattr(callback, name), **kwargs: Any) -> Any:  # noqa: B008
                start = time.perf_counter()
                try:
                    return _hook(*args, **kwargs)
                finally:
                    spent[0] += time.perf_counter() - start

            setattr(callback, name, timed)


def hook_seconds(case: Case, fit: _Fitter, fits: int) -> float:
    """Median over ``fits`` untimed fits of the wall time spent inside the callback's hooks."""
    totals = []
    for _ in range(fits):
        spent = [0.0]
        callbacks = case.make()
        _time_hooks(callbacks, spent)
        fit(callbacks)
        totals.append(spent[0])
    return float(np.median(totals))


def run(
    cases: list[Case],
    fit: _Fitter,
    *,
    rounds: int,
    warmup: int,
    hook_fits: int,
    rng: np.random.Generator,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Time every case for ``rounds`` interleaved rounds; returns one result per case."""
    for _ in range(warmup):  # first-use costs (imports inside Lightning, the logger, allocator) land here
        fit([])
        for case in cases:
            fit(case.make())
    times: dict[str, dict[str, list[float]]] = {
        c.name: {"wall_a": [], "wall_b": [], "cpu_a": [], "cpu_b": [], "steps_a": [], "steps_b": []} for c in cases
    }
    gc.freeze()  # long-lived objects (data, modules) out of the collector's way, for both arms alike
    try:
        for r in range(rounds):
            start = time.perf_counter()
            for i in range(len(cases)):
                case = cases[(i + r) % len(cases)]
                t = times[case.name]
                for arm in "ab" if (r + i) % 2 == 0 else "ba":
                    wall, cpu, steps = fit(case.make() if arm == "b" else [])
                    t[f"wall_{arm}"].append(wall)
                    t[f"cpu_{arm}"].append(cpu)
                    t[f"steps_{arm}"].append(steps)
            progress(f"round {r + 1}/{rounds}: {time.perf_counter() - start:.0f} s, load average {_measure.loadavg()}")
        hooks = {c.name: hook_seconds(c, fit, hook_fits) for c in cases}
    finally:
        gc.unfreeze()
    # Every A arm is the same fit: their pooled median is the steadiest denominator for the hooks' share.
    pooled = float(np.median([w for c in cases for w in times[c.name]["wall_a"]]))
    results = []
    for case in cases:
        t = times[case.name]
        wall_a, wall_b = np.array(t["wall_a"]), np.array(t["wall_b"])
        steps_a, steps_b = int(np.median(t["steps_a"])), int(np.median(t["steps_b"]))
        result: dict[str, Any] = {
            "case": case.name,
            "target": case.target,
            "note": case.note,
            "rounds": rounds,
            "steps_without": steps_a,
            "steps_with": steps_b,
        }
        result.update(
            without_s=float(np.median(wall_a)),
            with_s=float(np.median(wall_b)),
            **_measure.paired_ratio(wall_b, wall_a, rng),
        )
        result["cpu_ratio"] = float(np.median(t["cpu_b"]) / np.median(t["cpu_a"]))
        events = case.events(steps_b, fit.settings.epochs)
        result.update(
            overhead_s=result["with_s"] - result["without_s"],
            hooks_s=hooks[case.name],
            hooks_share=hooks[case.name] / pooled,
            events=events,
            unit=case.unit,
            hooks_per_event_s=hooks[case.name] / events if events else math.nan,
        )
        result.update({f"{k}_rounds": v for k, v in t.items()})
        results.append(result)
    return results


# ---------------------------------------------------------------------------------------------
# Report


def machine_info() -> dict[str, Any]:
    return _measure.machine_info(lightning=L.__version__)


def _ms(seconds: float) -> str:
    return "n/a" if not math.isfinite(seconds) else f"{seconds * 1e3:,.1f}"


def _per_unit(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    return f"{seconds * 1e3:,.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:,.0f} µs"


def _verdict(r: dict[str, Any]) -> str:
    if not r["target"]:
        return "—"
    if r["ratio_ci_low"] > TARGET or 1 + r["hooks_share"] > TARGET:  # the hooks alone are a lower bound
        return "**no**"
    if r["ratio_ci_high"] <= TARGET:
        return "yes"
    return "unclear"


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| callback | steps | without s/fit | with s/fit | ratio of medians [95% CI] | per-round ratio median [IQR] "
        "| CPU-time ratio | overhead ms/fit | in its hooks ms/fit (% of a fit without) "
        "| in its hooks per unit of work (units/fit) "
        "| ≤ 1.03 |",
        "|---|---:|---:|---:|---|---|---:|---:|---|---|---|",
    ]
    for r in results:
        steps = str(r["steps_with"])
        if r["steps_with"] != r["steps_without"]:
            steps = f"{r['steps_with']} (without: {r['steps_without']})"
        lines.append(
            f"| {r['case']} | {steps} | {r['without_s']:.3f} | {r['with_s']:.3f} "
            f"| {r['ratio']:.3f} [{r['ratio_ci_low']:.3f}, {r['ratio_ci_high']:.3f}] "
            f"| {r['round_ratio_median']:.3f} [{r['round_ratio_q1']:.3f}, {r['round_ratio_q3']:.3f}] "
            f"| {r['cpu_ratio']:.3f} | {_ms(r['overhead_s'])} | {_ms(r['hooks_s'])} ({100 * r['hooks_share']:.1f}%) "
            f"| {_per_unit(r['hooks_per_event_s'])} per {r['unit']} ({r['events']}) | {_verdict(r)} |"
        )
    return "\n".join(lines)


def format_machine(info: dict[str, Any], settings: Settings, steps_per_epoch: int) -> str:
    return "\n".join(
        [
            f"- machine: {info['cpu']}, {info['cores']} cores; device cpu",
            f"- torch {info['torch']}, lightning {info['lightning']}, {info['threads']} intra-op thread(s), "
            f"Python {info['python']}",
            f"- fit: DigitsConvNet, {settings.epochs} epoch(s) of {steps_per_epoch} steps (batch size "
            f"{settings.batch_size}), validation every epoch, {settings.logger} logger, "
            f"Trainer(log_every_n_steps={LOG_EVERY_N_STEPS})",
            f"- load average at start / end: {info['loadavg_start']} / {info.get('loadavg_end')}",
        ]
    )


# ---------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/callback_overhead.py",
        description="Time a Lightning fit of the digits convnet with and without each lightopt callback, interleaved.",
    )
    parser.add_argument("--rounds", type=int, default=None, help="A/B rounds per case (default 12; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run: fewer rounds, shorter fits")
    parser.add_argument("--json", metavar="PATH", help="also write all results, per-round times included, as JSON")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 keeps torch's default)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit (default 6; 2 with --quick)")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="training batch size (default 32: 34 steps per epoch)"
    )
    parser.add_argument(
        "--curvature-every",
        type=int,
        nargs="+",
        default=[10, 50, 200],
        metavar="N",
        help="CurvatureMonitor intervals to time (default 10 50 200)",
    )
    parser.add_argument(
        "--logger",
        choices=("tensorboard", "csv"),
        default="tensorboard",
        help="the logger of both arms (default tensorboard)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed fits per arm before timing (default 1)")
    parser.add_argument(
        "--hook-fits",
        type=int,
        default=None,
        help="untimed fits per case that time the callback's hooks (default 2; 1 with --quick)",
    )
    parser.add_argument("--only", metavar="REGEX", help="run only the cases whose name matches REGEX")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 12)
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else 6)
    hook_fits = args.hook_fits if args.hook_fits is not None else (1 if args.quick else 2)
    checks = [
        ("rounds", rounds, 2),
        ("hook-fits", hook_fits, 1),
        ("epochs", epochs, 1),
        ("batch-size", args.batch_size, 1),
        ("threads", args.threads, 0),
        ("warmup", args.warmup, 0),
        ("seed", args.seed, 0),
    ]
    checks += [("curvature-every", n, 1) for n in args.curvature_every]
    _measure.check_at_least(parser, checks)
    try:
        pattern = re.compile(args.only) if args.only else None
    except re.error as error:
        parser.error(f"`--only` must be a regular expression, but got only={args.only!r} ({error}).")
    cases, skipped = _cases(args.curvature_every)
    if pattern:
        cases = [c for c in cases if pattern.search(c.name)]
        skipped = [s for s in skipped if pattern.search(s)]
        if not cases:
            parser.error(
                f"`--only` matches no case, but got only={args.only!r}; "
                f"use any of: {', '.join(c.name for c in _cases(args.curvature_every)[0])}."
            )

    settings = Settings(epochs=epochs, batch_size=args.batch_size, logger=args.logger, seed=args.seed)
    threads = torch.get_num_threads()
    quiet = {name: logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")}
    levels = {name: log.level for name, log in quiet.items()}
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        for log in quiet.values():
            log.setLevel(logging.ERROR)
        info = machine_info()
        with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="lightopt-callback-overhead-") as root:
            warnings.simplefilter("ignore")  # Lightning's advice (workers, log interval) and the callbacks' flags
            fit = _Fitter(settings, root)
            steps_per_epoch = math.ceil(len(fit.datamodule.train_set) / settings.batch_size)
            results = run(
                cases,
                fit,
                rounds=rounds,
                warmup=args.warmup,
                hook_fits=hook_fits,
                rng=np.random.default_rng(args.seed),
                progress=lambda line: print(line, file=sys.stderr, flush=True),
            )
    finally:
        torch.set_num_threads(threads)
        for name, log in quiet.items():
            log.setLevel(levels[name])
    info["loadavg_end"] = _measure.loadavg()

    print(format_machine(info, settings, steps_per_epoch))
    print(
        f"- {rounds} rounds per case, cases rotated each round, order alternating A B / B A; "
        f"hooks timed in {hook_fits} separate fit(s) per case\n"
    )
    print(format_table(results))
    if skipped:
        print("\nskipped: " + "; ".join(skipped))
    notes = list(dict.fromkeys(f"- {r['case']}: {r['note']}" for r in results if r["note"]))
    if notes:
        print("\nNotes:\n" + "\n".join(notes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": info,
                    "settings": vars(settings),
                    "steps_per_epoch": steps_per_epoch,
                    "rounds": rounds,
                    "target": TARGET,
                    "results": results,
                    "skipped": skipped,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
