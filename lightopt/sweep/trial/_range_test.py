"""The learning-rate range test of §8.3.1: a short run with an exponentially growing learning rate.

The book chooses ε_0 by "monitoring the first several iterations" and taking "a learning rate that
is higher than the best-performing learning rate at this time, but not so high that it causes
severe instability". :func:`range_test` trains the file's model on its data with its optimizer for
``steps`` batches while the learning rate grows exponentially from ``min_lr`` to ``max_lr``,
records the smoothed loss, stops once it diverges, and suggests a range (:func:`suggest_range`):

1. the smoothed loss is an exponential average with β = 0.98 (Lightning's), bias-corrected by the
   number of losses it holds, 1 − β^k after k batches (:func:`unbiased`: Lightning divides by
   1 − β^(k+1), so its first value reads half the loss and its tenth 8% low, which on a loss that
   falls slowly put the lowest point at the first step looked at);
2. the test stops early (diverges) at the first step whose smoothed loss exceeds 4× the lowest
   so far, or is not finite;
3. the **upper end** is the learning rate at the lowest smoothed loss, looked for after the first
   10 steps (a quarter of a shorter test), whose averages hold few batches: the largest rate
   before the loss rises again, so it is below the divergence point, and, the loss falling fastest just
   before it, above the rate that is best after the first iterations;
4. the **lower end** is two decades below it (``upper / 100``), so a log-scale search spans the
   rates that are slower but safe; both are clipped to the tested range.

The training is Lightning's ``Tuner.lr_find`` (one optimizer; its exponential schedule; the model,
optimizer and random state saved before and restored after, so a module used by a process that
goes on has its weights back). What lightopt adds, and why ``lr_find`` alone does not do it:

* the **effective step** ε/(1 − α) of momentum SGD (:class:`~lightopt.sweep.spec.LrEntry`):
  ``lr_find`` ramps ε; at a fixed α the test is the same run read in another coordinate, so the
  values are divided by ``scale`` and both columns are reported;
* the config's own **schedule is ignored** during the test: ``lr_find`` replaces it with its ramp
  (one ``step`` interval scheduler), as it must, and puts it back after;
* **one device**: ``lr_find`` under DDP runs on every rank; here the Trainer is built with
  ``devices=1``, ``num_nodes=1`` and strategy ``auto``, so the test of a DDP config runs in this
  process on one device (the result says so), with the config's accelerator;
* the Trainer is built for the test only: ``max_epochs=-1`` and whole epochs (a small dataset
  repeats until the steps are done), no validation (``lr_find`` would validate at each epoch
  end), no logger, no checkpoints and none of the config's callbacks, and its root folder is a
  temporary directory, so nothing lands in the user's logs or checkpoints;
* the suggested range (above; ``lr_find``'s own suggestion is the steepest descent point, a
  single rate) and the table and plot.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lightopt import _validation
from lightopt.runconfig import CliSpec, Run, build
from lightopt.sweep.spec import LrEntry
from lightopt.sweep.trial._build import quiet_lightning

__all__ = ["DIVERGENCE", "RangeTest", "range_test", "run_range_test", "suggest_range", "unbiased"]

DIVERGENCE = 4.0  # the test stops once the smoothed loss exceeds this multiple of its lowest value
_DECADES = 2  # the lower end is this many decades below the upper end
_SKIP = 10  # the first steps' smoothed losses average few batches: the lowest is looked for after them
_PLAIN = LrEntry()  # the learning rate itself, no momentum reported
_NEVER = 10**9  # check_val_every_n_epoch: no validation during the test


BETA = 0.98  # the smoothing of Lightning's lr_find (its callback's default; Tuner.lr_find does not expose it)


def unbiased(losses: Sequence[float], beta: float = BETA) -> list[float]:
    """Lightning's smoothed range-test ``losses``, bias-corrected by the number of losses each average holds.

    Lightning's ``lr_find`` keeps ``avg ← β·avg + (1 − β)·loss`` and records ``avg / (1 − β^(g+1))``,
    where ``g``, the trainer's global step, is already ``k`` at the ``k``-th recorded loss: the
    average of ``k`` losses is divided by ``1 − β^(k+1)`` instead of ``1 − β^k``, so each value reads
    low by the factor ``(1 − β^k) / (1 − β^(k+1))`` (0.50 at the first, 0.92 at the tenth, 0.99 at
    the hundredth). Entries it records as NaN (a step without a loss) do not enter the average.

    Example:
        >>> [round(v, 6) for v in unbiased([2.0 * (1 - 0.98) / (1 - 0.98**2), 2.0 * (1 - 0.98**2) / (1 - 0.98**3)])]
        [2.0, 2.0]
    """
    out, held = [], 0
    for index, loss in enumerate(losses):
        if math.isnan(loss):
            out.append(loss)
            continue
        held += 1
        out.append(loss * (1 - beta ** (index + 2)) / (1 - beta**held))
    return out


def suggest_range(
    values: Sequence[float], losses: Sequence[float], bounds: tuple[float, float] | None = None
) -> tuple[float, float, int]:
    """``(lower, upper, index of the lowest smoothed loss)`` for a test's ``values`` and smoothed ``losses``.

    Upper: the value at the lowest finite smoothed loss; lower: upper / 100; both clipped to
    ``bounds`` (the tested range).

    Example:
        >>> suggest_range([0.001, 0.01, 0.1, 1.0], [2.0, 1.5, 1.0, 9.0])
        (0.001, 0.1, 2)
    """
    skip = min(_SKIP, len(losses) // 4)
    finite = [i for i, loss in enumerate(losses) if i >= skip and math.isfinite(loss)]
    if not finite:
        raise ValueError("the range test recorded no finite loss: lower `--min-lr`, or check the model's loss.")
    best = min(finite, key=lambda i: losses[i])
    upper = float(values[best])
    lower = upper / 10**_DECADES
    if bounds is not None:
        lower = min(max(lower, bounds[0]), bounds[1])
        upper = min(max(upper, bounds[0]), bounds[1])
    return lower, upper, best


@dataclass(frozen=True)
class RangeTest:
    """A range test's curve and suggestion; values are in the tested coordinate (``entry.coordinate``).

    ``values`` and ``losses`` (smoothed) per step; ``diverged`` is the step at which the loss
    diverged (None: it did not in ``steps``); ``low``/``high`` the suggested range, ``best`` the
    step of the lowest smoothed loss; ``tested`` the searched range; ``devices`` what the config's
    Trainer asked for when it was more than the one device the test ran on (else None).
    """

    entry: LrEntry
    values: tuple[float, ...]
    losses: tuple[float, ...]
    low: float
    high: float
    best: int
    diverged: int | None
    tested: tuple[float, float]
    steps: int
    devices: str | None = None

    def table(self, rows: int = 20) -> str:
        """The curve as text, about ``rows`` rows (every k-th step, the lowest loss and divergence marked)."""
        every = max(1, math.ceil(len(self.values) / rows))
        shown = sorted({*range(0, len(self.values), every), len(self.values) - 1, self.best})
        # the effective step is its own column unless it is the tested coordinate
        momentum = self.entry.momentum is not None and self.entry.coordinate != "effective"
        coordinate = self.entry.coordinate != "lr"
        header = ["step", "lr"] + ([self.entry.coordinate] if coordinate else []) + (["lr/(1-α)"] if momentum else [])
        lines = ["  ".join(f"{h:>10}" for h in header) + "  smoothed loss"]
        for i in shown:
            value = self.values[i]
            cells = [f"{i:>10d}", f"{self.entry.lr(value):>10.3g}"]
            cells += [f"{value:>10.3g}"] if coordinate else []
            cells += [f"{self.entry.effective(value):>10.3g}"] if momentum else []
            mark = "  <- lowest" if i == self.best else "  <- diverged" if i == self.diverged else ""
            lines.append("  ".join(cells) + f"  {self.losses[i]:>13.5g}{mark}")
        return "\n".join(lines)

    def describe(self) -> str:
        """The suggested range in one line or two, with the rule that gave it."""
        entry = self.entry
        what = entry.name or entry.key or "the learning rate"
        parts = [f"suggested range for {what}: [{self.low:.3g}, {self.high:.3g}]"]
        if entry.coordinate == "effective":
            parts.append(f"(the effective step lr/(1-α) at the file's momentum α={entry.momentum:g})")
        elif entry.coordinate != "lr":
            parts.append(f"({entry.coordinate})")
        if entry.coordinate != "lr":
            parts.append(f"= lr [{entry.lr(self.low):.3g}, {entry.lr(self.high):.3g}]")
        if entry.momentum is not None and entry.coordinate != "effective":
            parts.append(
                f"= effective step lr/(1-α) at α={entry.momentum:g}: "
                f"[{entry.effective(self.low):.3g}, {entry.effective(self.high):.3g}]"
            )
        rule = f"upper = the lowest smoothed loss (step {self.best}), lower = upper / 100"
        if self.diverged is not None:
            rule += f"; the loss diverged at {self.values[self.diverged]:.3g} (> {DIVERGENCE:g}x its lowest)"
        elif self.best >= len(self.values) - 1:
            rule += "; the loss was still falling at the end: raise the test's maximum to see where it rises"
        if self.best == 0:
            rule += "; the loss rose from the first step: lower the test's minimum"
        lines = [" ".join(parts), f"  ({rule}, §8.3.1)"]
        lines += [f"  note: {note}" for note in entry.notes]
        if self.devices is not None:
            lines.append(f"  note: the config's trainer asks for {self.devices}; the test ran in one process")
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """What a study records (JSON): the entry's name and the bounds, the tested range, the coordinate."""
        return {
            "name": self.entry.name,
            "low": self.low,
            "high": self.high,
            "coordinate": self.entry.coordinate,
            "momentum": self.entry.momentum,
            "tested": list(self.tested),
            "steps": self.steps,
            "diverged_at": None if self.diverged is None else self.values[self.diverged],
        }

    def plot(self, path: str | Path) -> Path:
        """Write the curve as a PNG (log-scale values, the suggested range shaded); returns the path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure, axes = plt.subplots(figsize=(6, 4))
        try:
            axes.plot(self.values, self.losses)
            axes.set_xscale("log")
            axes.axvspan(self.low, self.high, alpha=0.2, label=f"suggested [{self.low:.3g}, {self.high:.3g}]")
            if self.diverged is not None:
                axes.axvline(self.values[self.diverged], color="red", linestyle="--", label="diverged")
            axes.set_xlabel(self.entry.coordinate if self.entry.coordinate != "lr" else "learning rate")
            axes.set_ylabel("smoothed training loss")
            finite = [loss for loss in self.losses if math.isfinite(loss)]
            if finite:  # the divergence would flatten the rest of the curve
                top = min(max(finite), DIVERGENCE * min(finite) * 1.2)
                axes.set_ylim(min(finite) - 0.05 * (top - min(finite)), top)
            title = "learning-rate range test (§8.3.1)"
            if self.entry.momentum is not None:
                title += f", momentum α={self.entry.momentum:g}"
            axes.set_title(title)
            axes.legend()
            figure.tight_layout()
            figure.savefig(path)
        finally:
            plt.close(figure)
        return path


def _check(min_lr: float, max_lr: float, steps: int) -> None:
    if not _validation.is_integer(steps, low=2):
        raise ValueError(f"`steps` must be an integer >= 2, but got steps={steps!r}.")
    for name, value in (("min_lr", min_lr), ("max_lr", max_lr)):
        if not _validation.is_real(value) or not math.isfinite(value) or not value > 0:
            raise ValueError(f"`{name}` must be a finite number > 0, but got {name}={value!r}.")
    if not min_lr < max_lr:
        raise ValueError(f"`min_lr` must be < `max_lr`, but got min_lr={min_lr!r}, max_lr={max_lr!r}.")


def run_range_test(
    run: Run, entry: LrEntry = _PLAIN, *, min_lr: float = 1e-6, max_lr: float = 10.0, steps: int = 100
) -> RangeTest:
    """The range test on a built :class:`~lightopt.runconfig.Run` (its model, datamodule and Trainer).

    ``min_lr``/``max_lr`` are in ``entry``'s coordinate (the learning rate is ``entry.lr(value)``).
    The model's weights, its optimizer state and the random state are the same after as before
    (Lightning restores them from a checkpoint in ``trainer.default_root_dir``, then deletes it).
    """
    from lightning.pytorch.tuner import Tuner

    _check(min_lr, max_lr, steps)
    with quiet_lightning():
        finder = Tuner(run.trainer).lr_find(
            run.model,
            datamodule=run.datamodule,
            min_lr=entry.lr(min_lr),
            max_lr=entry.lr(max_lr),
            num_training=steps,
            mode="exponential",
            early_stop_threshold=DIVERGENCE,
            update_attr=False,  # the model's `lr` (if any) is left alone; a config's optimizer has none to find
        )
    if finder is None:
        raise ValueError("the range test did not run: the config sets `trainer.fast_dev_run`; remove it for the test.")
    lrs, losses = list(finder.results["lr"]), list(finder.results["loss"])
    n = min(len(lrs), len(losses))
    values = tuple(lr / entry.scale for lr in lrs[:n])
    losses = unbiased([float(loss) for loss in losses[:n]])
    diverged = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
    finite = [loss for loss in losses if math.isfinite(loss)]
    if diverged is None and (n < steps or (finite and losses[-1] > DIVERGENCE * min(finite))):
        diverged = n - 1  # Lightning stopped on the 4x rule (at the last step, the steps ran out as it did)
    if diverged is not None:
        values, losses = values[: diverged + 1], losses[: diverged + 1]
    low, high, best = suggest_range(values, losses, (min_lr, max_lr))
    return RangeTest(entry, values, tuple(losses), low, high, best, diverged, (min_lr, max_lr), steps)


def range_test(
    config: Mapping[str, Any],
    entry: LrEntry = _PLAIN,
    *,
    cli: CliSpec = CliSpec(),
    min_lr: float = 1e-6,
    max_lr: float = 10.0,
    steps: int = 100,
    seed: int | None = None,
) -> RangeTest:
    """The range test of a run config: built for the test (see the module), run, thrown away.

    ``seed`` replaces the config's ``seed_everything``. Raises ``ValueError`` for a bad range or
    ``steps``, before anything is built.
    """
    _check(min_lr, max_lr, steps)
    config = copy.deepcopy(dict(config))
    trainer = dict(config.get("trainer") or {})
    devices = _several_devices(trainer)
    trainer.pop("callbacks", None)
    config["trainer"] = trainer
    # lr_find replaces the schedule with its ramp, so the config's is not built at all: a schedule
    # that needs the run's length (LinearDecay's tau from max_epochs) has none in an unbounded test
    config.pop("lr_scheduler", None)
    with tempfile.TemporaryDirectory(prefix="lightopt-range-test-") as folder:
        overrides = {
            "default_root_dir": folder,
            "devices": 1,
            "num_nodes": 1,
            "strategy": "auto",
            "max_epochs": -1,
            "max_steps": -1,
            "max_time": None,
            "check_val_every_n_epoch": _NEVER,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            "fast_dev_run": False,
        }
        # a short epoch of the config's would only add epoch ends: the whole dataset repeats instead
        overrides.update({key: 1.0 for key in ("limit_train_batches", "val_check_interval") if key in trainer})
        with quiet_lightning():
            run = build(config, spec=cli, seed=seed, trainer_overrides=overrides)
        result = run_range_test(run, entry, min_lr=min_lr, max_lr=max_lr, steps=steps)
    return result if devices is None else replace(result, devices=devices)


def _several_devices(trainer: Mapping[str, Any]) -> str | None:
    """``"devices=4, strategy=ddp"`` when the config's Trainer asks for more than one process, else None."""
    devices, nodes, strategy = trainer.get("devices"), trainer.get("num_nodes"), trainer.get("strategy")
    several = (
        (isinstance(devices, int) and devices > 1)
        or (isinstance(devices, (list, tuple)) and len(devices) > 1)
        or devices == -1
        or (isinstance(nodes, int) and nodes > 1)
        or (isinstance(strategy, str) and strategy.startswith("ddp"))
    )
    if not several:
        return None
    shown = {"devices": devices, "num_nodes": nodes, "strategy": strategy}
    return ", ".join(f"{k}={v}" for k, v in shown.items() if v is not None)
