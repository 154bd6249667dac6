"""Figure 8.1 (§8.2.1) on handwritten digits: gradient norm, gᵀHg and validation error during training.

The book's Figure 8.1 shows a convolutional network whose gradient norm *grows* during training
while its validation error still falls: gradient descent does not arrive at a critical point.
This example trains the small digits ConvNet (``examples/digits.py``) with lightopt's SGD and
momentum at a constant learning rate, logs ‖g‖ every step, gᵀHg (eq. 8.10) with
:class:`~lightopt.callbacks.curvature_monitor.CurvatureMonitor` every few steps and the
validation accuracy every epoch to a CSVLogger, then reads ``metrics.csv`` back, draws the three
curves and prints what the data show. From the repository root::

    python examples/figure_8_1.py                        # writes examples/figure_8_1.png
    python examples/figure_8_1.py --epochs 5 --output /tmp/fig.png
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

if __package__ in (None, ""):  # run as a script: make `examples.digits` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.digits import DigitsConvNet, DigitsDataModule
from lightopt.callbacks.curvature_monitor import CurvatureMonitor

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "figure_8_1.png"


class GradientNorm(L.Callback):
    """Logs the global gradient norm ‖g‖ of every optimizer step as ``grad_norm``."""

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        grads = [p.grad.detach().double() for p in pl_module.parameters() if p.grad is not None]
        pl_module.log("grad_norm", torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Reproduce the book's Figure 8.1 on scikit-learn's digits.")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.05, help="constant learning rate ε of lightopt's SGD")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--every-n-steps", type=int, default=5, help="CurvatureMonitor's measuring interval")
    parser.add_argument("--limit-train-batches", type=float, default=1.0, help="for quick runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the PNG")
    parser.add_argument("--log-dir", type=Path, help="keep the CSV logs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.every_n_steps < 1:
        parser.error("--epochs, --batch-size and --every-n-steps must be >= 1")
    return args


def train(args: argparse.Namespace, log_dir: Path) -> Path:
    """Fit the ConvNet with both monitors; return the path of the CSVLogger's metrics.csv."""
    L.seed_everything(args.seed, workers=True)
    datamodule = DigitsDataModule(batch_size=args.batch_size, seed=args.seed)
    optimizer = {"class_path": "lightopt.optim.SGD", "init_args": {"lr": args.lr, "momentum": args.momentum}}
    model = DigitsConvNet(channels=16, optimizer=optimizer, lr_scheduler=None)
    logger = CSVLogger(log_dir, name="figure_8_1")
    trainer = L.Trainer(
        max_epochs=args.epochs,
        limit_train_batches=args.limit_train_batches,
        accelerator="cpu",
        deterministic=True,
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=log_dir,
        callbacks=[GradientNorm(), CurvatureMonitor(every_n_steps=args.every_n_steps, warn_ratio=None)],
    )
    trainer.fit(model, datamodule=datamodule)
    return Path(logger.log_dir) / "metrics.csv"


def read_series(metrics_csv: Path) -> dict[str, tuple[list[int], list[float]]]:
    """{key: (steps, values)} for the keys this example plots."""
    keys = {"grad_norm": "grad_norm", "gTHg": "curvature/gTHg", "val_acc": "val_acc"}
    series: dict[str, tuple[list[int], list[float]]] = {name: ([], []) for name in keys}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            for name, key in keys.items():
                if row.get(key):
                    series[name][0].append(int(row["step"]))
                    series[name][1].append(float(row[key]))
    return series


def _quarter_means(values: list[float]) -> tuple[float, float]:
    n = max(1, len(values) // 4)
    return sum(values[:n]) / n, sum(values[-n:]) / n


def _ranks(values: list[float]) -> torch.Tensor:
    """Ranks from 0, ties sharing their average rank (validation error often repeats a value)."""
    v = torch.tensor(values, dtype=torch.float64)
    less = (v.unsqueeze(1) > v.unsqueeze(0)).sum(1).double()
    equal = (v.unsqueeze(1) == v.unsqueeze(0)).sum(1).double()
    return less + (equal - 1) / 2


def _spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation; NaN with fewer than 3 points or a constant series."""
    if len(x) < 3:
        return math.nan
    return torch.corrcoef(torch.stack([_ranks(x), _ranks(y)]))[0, 1].item()


def summarize(series: dict[str, tuple[list[int], list[float]]]) -> list[str]:
    """Data-driven lines: first- vs last-quarter means and the rank correlation with the step."""
    steps_err, acc = series["val_acc"]
    curves = {
        "gradient norm ‖g‖": series["grad_norm"],
        "gᵀHg": series["gTHg"],
        "validation error": (steps_err, [1.0 - a for a in acc]),
    }
    lines, ratio = [], {}
    for name, (steps, values) in curves.items():
        first, last = _quarter_means(values)
        ratio[name] = last / first if first else math.nan
        rho = _spearman([float(s) for s in steps], values)
        lines.append(
            f"{name:>18}: first-quarter mean {first:.4g}, last-quarter mean {last:.4g} "
            f"(×{ratio[name]:.3g}); Spearman ρ with step {rho:+.2f}"
        )
    # The verdict compares the last quarter of the run with the first.
    grows = ratio["gradient norm ‖g‖"] > 1
    falls = ratio["validation error"] < 1
    verdict = {
        (True, True): "as in Figure 8.1, the gradient norm grows while validation error falls.",
        (False, True): "unlike Figure 8.1, the gradient norm does not grow, while validation error falls.",
        (True, False): "the gradient norm grows, but validation error does not fall.",
        (False, False): "the gradient norm does not grow and validation error does not fall.",
    }[(grows, falls)]
    lines.append(f"Verdict: {verdict}")
    return lines


def plot(series: dict[str, tuple[list[int], list[float]]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps_err, acc = series["val_acc"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), dpi=90)
    panels = [
        (axes[0], series["grad_norm"], "gradient norm ‖g‖", "C0"),
        (axes[1], series["gTHg"], "gᵀHg (eq. 8.10)", "C1"),
        (axes[2], (steps_err, [1.0 - a for a in acc]), "validation error (1 − val_acc)", "C2"),
    ]
    for ax, (steps, values), title, color in panels:
        ax.plot(
            steps,
            values,
            color=color,
            lw=0.6,
            alpha=0.45 if ax is not axes[2] else 1.0,
            marker="o" if ax is axes[2] else None,
            ms=2.5,
        )
        if ax is not axes[2] and len(values) >= 10:  # a running mean over ~1/20 of the run
            k = max(2, len(values) // 20)
            smooth = [
                sum(values[max(0, i - k + 1) : i + 1]) / len(values[max(0, i - k + 1) : i + 1])
                for i in range(len(values))
            ]
            ax.plot(steps, smooth, color=color, lw=1.8, label=f"running mean ({k} points)")
            ax.legend(fontsize=8, loc="best")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log" if all(v > 0 for v in series["gTHg"][1]) else "symlog")
    fig.suptitle("Figure 8.1 on digits: ConvNet, lightopt SGD with momentum, constant ε", fontsize=11)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Train, plot to ``--output`` and print the summary. Returns the exit code."""
    args = _parse_args(argv)
    start = time.perf_counter()
    quiet = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [log.level for log in quiet]
    try:
        for log in quiet:
            log.setLevel(logging.WARNING)
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            metrics_csv = train(args, args.log_dir or Path(tmp))
            series = read_series(metrics_csv)
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
    plot(series, args.output)
    print(
        f"Figure 8.1 on digits ({len(series['grad_norm'][0])} steps, "
        f"{time.perf_counter() - start:.0f} s): {args.output}"
    )
    for line in summarize(series):
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
