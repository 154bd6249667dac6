"""Greedy supervised layer-wise pretraining (§8.7.4, Figure 8.7) of a 3-hidden-layer MLP on handwritten digits.

Stage 1 trains hidden layer 1 with a temporary output layer; stage 2 freezes layer 1 and trains
layer 2 with a new output layer; stage 3 likewise; then all layers are fine-tuned jointly. The
same network (same initial hidden layers) is also trained from scratch for the same total number
of epochs, and both are tested. From the repository root::

    python examples/greedy_pretraining.py
    python examples/greedy_pretraining.py --epochs-per-stage 3 --finetune-epochs 3 --hidden 32
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

if __package__ in (None, ""):  # run as a script: make `examples.digits` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.digits import DigitsDataModule, DigitsMLP
from lightopt.pretraining import greedy_layerwise_pretraining

HIDDEN_LAYERS = 3


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Greedy supervised pretraining (§8.7.4) vs. training from scratch.")
    parser.add_argument("--hidden", type=int, default=64, help="units per hidden layer")
    parser.add_argument("--epochs-per-stage", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=5, help="joint fine-tuning epochs (0: none)")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (momentum 0.9)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-train-batches", type=int, help="batches per epoch (for quick checks)")
    args = parser.parse_args(argv)
    if min(args.hidden, args.epochs_per_stage, args.batch_size) < 1 or args.finetune_epochs < 0:
        parser.error("--hidden, --epochs-per-stage and --batch-size must be >= 1, --finetune-epochs >= 0")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Pretrain greedily, fine-tune, and train the same network from scratch; returns the metrics."""
    optimizer = {"class_path": "lightopt.optim.SGD", "init_args": {"lr": args.lr, "momentum": 0.9}}
    trainer_kwargs: dict[str, Any] = dict(
        accelerator="cpu",
        deterministic=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    if args.limit_train_batches:
        trainer_kwargs["limit_train_batches"] = args.limit_train_batches
    datamodule = DigitsDataModule(batch_size=args.batch_size, seed=args.seed)

    def wrap(network: torch.nn.Module) -> DigitsMLP:  # DigitsMLP's forward is self.net(x)
        model = DigitsMLP(hidden=args.hidden, layers=HIDDEN_LAYERS, optimizer=optimizer)
        model.net = network
        return model

    L.seed_everything(args.seed, workers=True)
    scratch = DigitsMLP(hidden=args.hidden, layers=HIDDEN_LAYERS, optimizer=optimizer)
    # net = Flatten, (Linear, ReLU) x 3, Linear: the hidden blocks start from the scratch model's weights
    net = copy.deepcopy(scratch.net)
    blocks = [net[0:3], net[3:5], net[5:7]]
    result = greedy_layerwise_pretraining(
        blocks,
        lambda k: torch.nn.Linear(args.hidden, DigitsDataModule.num_classes),
        wrap,
        datamodule,
        epochs_per_stage=args.epochs_per_stage,
        finetune_epochs=args.finetune_epochs,
        trainer_kwargs=trainer_kwargs,
        seed=args.seed,
    )
    total_epochs = HIDDEN_LAYERS * args.epochs_per_stage + args.finetune_epochs
    trainer = L.Trainer(max_epochs=total_epochs, **trainer_kwargs)
    trainer.fit(scratch, datamodule=datamodule)
    metrics = {
        "stages": [stage.val_metrics["val_acc"] for stage in result.stages],
        "finetuned": result.finetune_metrics["val_acc"] if result.finetune_metrics else None,
        "total_epochs": total_epochs,
    }
    for name, model in (("pretrained", result.module), ("scratch", scratch)):
        tester = L.Trainer(**trainer_kwargs)
        metrics[f"{name}_val"] = tester.validate(model, datamodule=datamodule, verbose=False)[0]["val_acc"]
        metrics[f"{name}_test"] = tester.test(model, datamodule=datamodule, verbose=False)[0]["test_acc"]
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print one line per stage and per model. Returns the exit code."""
    args = _parse_args(argv)
    quiet = {name: logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")}
    levels = {name: log.level for name, log in quiet.items()}
    start = time.perf_counter()
    try:
        for log in quiet.values():
            log.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*number of training batches.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*")
            metrics = run(args)
    finally:
        for name, log in quiet.items():
            log.setLevel(levels[name])
    for k, acc in enumerate(metrics["stages"], 1):
        print(
            f"stage {k}: {k} hidden layer(s) + temporary output layer, {args.epochs_per_stage} epochs: "
            f"val_acc={acc:.4f}"
        )
    if metrics["finetuned"] is not None:
        print(f"fine-tuned jointly, {args.finetune_epochs} epochs: val_acc={metrics['finetuned']:.4f}")
    print(
        f"greedy pretraining ({metrics['total_epochs']} epochs in all): val_acc={metrics['pretrained_val']:.4f} "
        f"test_acc={metrics['pretrained_test']:.4f}"
    )
    print(
        f"from scratch ({metrics['total_epochs']} epochs): val_acc={metrics['scratch_val']:.4f} "
        f"test_acc={metrics['scratch_test']:.4f} ({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
