"""Handwritten digits with lightopt: scikit-learn's 8x8 digits, an MLP or a small ConvNet, SGD and LinearDecay.

The data set (1,797 real handwritten digits, 8x8 pixels, ten classes) ships inside scikit-learn, so
nothing is downloaded. From the repository root::

    python examples/digits.py                                   # MLP, SGD with momentum, LinearDecay
    python examples/digits.py --model convnet --optimizer adam --lr 0.003 --epochs 5

The classes are LightningCLI class paths too (``examples.digits.DigitsDataModule``,
``examples.digits.DigitsMLP``, ``examples.digits.DigitsConvNet``); the models take ``optimizer`` and
``lr_scheduler`` dicts through :class:`lightopt.ConfigureOptimizersMixin`.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import itertools
import logging
import sys
import time
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset, default_collate

from lightopt import ConfigureOptimizersMixin

# SGD with momentum (Algorithm 8.2); each ε₀ is the best of a few tried for 2 to 4 epochs.
MLP_OPTIMIZER = {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.2, "momentum": 0.9}}
CONVNET_OPTIMIZER = {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}}


class DigitsDataModule(L.LightningDataModule):
    """scikit-learn's digits as a seeded, stratified train/val/test split of [N, 1, 8, 8] images in [0, 1].

    Pixel values (0..16) are divided by 16. The test set is split off first, then the validation set
    from the rest, both stratified by class with ``seed``: with the defaults 1077/360/360 images.
    ``train_plus_val=True`` trains on train and validation together (to retrain on all the data
    once settings are chosen); the validation loader then still returns the validation set, which
    is no longer held out. The test set is never trained on.

    Example:
        >>> dm = DigitsDataModule(batch_size=32)
        >>> dm.setup()
        >>> len(dm.train_set), len(dm.val_set), len(dm.test_set)
        (1077, 360, 360)
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape), y.dtype
        ((32, 1, 8, 8), torch.int64)
    """

    num_classes = 10
    image_shape = (1, 8, 8)

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
        train_plus_val: bool = False,
    ) -> None:
        super().__init__()
        for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"`{name}` must be an integer, but got {name}={value!r}.")
            if value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, but got {name}={value}.")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 < value < 1:
                raise ValueError(f"`{name}` must be in (0, 1), but got {name}={value!r}.")
        if val_fraction + test_fraction >= 1:
            raise ValueError(
                "`val_fraction + test_fraction` must be < 1 to leave training data, but got "
                f"val_fraction={val_fraction!r}, test_fraction={test_fraction!r}."
            )
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.split_indices: dict[str, np.ndarray] = {}
        self.train_set = self.val_set = self.test_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, targets = _digits()
        hp = self.hparams
        train, val, test = _split(hp.val_fraction, hp.test_fraction, hp.seed)
        self.split_indices = {"train": train, "val": val, "test": test}
        self.train_set, self.val_set, self.test_set = (
            _TensorBatches(images[i], targets[i]) for i in (train, val, test)
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_set
        if self.hparams.train_plus_val:  # train, then val: the order ConcatDataset([train, val]) gives
            dataset = _TensorBatches(*(torch.cat(pair) for pair in zip(self.train_set.tensors, self.val_set.tensors)))
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return self._loader(dataset, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def _loader(self, dataset: Any, **kwargs: Any) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset, self.batch_size, num_workers=workers, persistent_workers=workers > 0, collate_fn=_collate, **kwargs
        )


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 images ([N, 1, 8, 8], pixels / 16) and labels, parsed once per process (about 20 ms)."""
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    images = torch.tensor(features / 16.0, dtype=torch.float32).reshape(-1, *DigitsDataModule.image_shape)
    return images, torch.tensor(labels, dtype=torch.long)


@functools.lru_cache(maxsize=16)
def _split_cached(val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    labels = _digits()[1].numpy()
    rest, test = train_test_split(np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=labels[rest], random_state=seed
    )
    return train, val, test


def _split(val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Train, validation and test indices: the test set split off first, then validation, both stratified.

    A pure function of its arguments (scikit-learn's ``random_state``, not the global RNGs), so it is
    computed once per process and copied out.
    """
    return tuple(indices.copy() for indices in _split_cached(val_fraction, test_fraction, seed))


class _TensorBatches(TensorDataset):
    """A ``TensorDataset`` that a ``DataLoader`` reads a whole batch at a time.

    ``__getitems__`` (which ``DataLoader`` calls with a batch's indices) indexes each tensor once,
    instead of fetching the examples one by one and stacking them: the same batches, several times
    cheaper for small in-memory tensors. :func:`_collate` passes the result through.
    """

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(tensor[index] for tensor in self.tensors)


def _collate(batch: Any) -> Any:
    """A batch from :meth:`_TensorBatches.__getitems__` as ``[x, y]`` (as ``default_collate`` gives it), or collated."""
    return list(batch) if isinstance(batch, tuple) else default_collate(batch)


class _DigitsClassifier(ConfigureOptimizersMixin, L.LightningModule):
    """Cross-entropy training and the logged metrics shared by the digits models.

    Logged: ``train_loss_step`` on the steps the Trainer writes to its loggers (every
    ``log_every_n_steps``), ``train_loss_epoch``, ``val_loss`` and ``val_acc`` (``prog_bar``) per
    validation pass, ``test_loss`` and ``test_acc``. Epoch values are means over the examples, as
    ``self.log(..., on_epoch=True)`` computes them, but summed here and logged once per epoch:
    each ``self.log`` call costs more than a training step of these small models.
    """

    net: torch.nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss_and_accuracy(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits, y), (logits.argmax(dim=1) == y).float().mean()

    def _start(self, stage: str, *names: str) -> None:
        """Zero the sums of ``stage`` (train, val, test: validation runs inside a training epoch)."""
        if not hasattr(self, "_sums"):
            self._sums: dict[str, tuple[dict[str, torch.Tensor], int]] = {}
        self._sums[stage] = ({f"{stage}_{name}": torch.zeros((), device=self.device) for name in names}, 0)

    def _add(self, stage: str, batch_size: int, *means: torch.Tensor) -> None:
        sums, examples = self._sums[stage]
        sums = {name: total + mean.detach() * batch_size for (name, total), mean in zip(sums.items(), means)}
        self._sums[stage] = (sums, examples + batch_size)

    def _means(self, stage: str) -> dict[str, torch.Tensor]:
        sums, examples = self._sums[stage]
        return {name: total / examples for name, total in sums.items()}

    def on_train_start(self) -> None:
        # A fit resumed from a mid-epoch checkpoint starts inside an epoch, without on_train_epoch_start:
        # its first epoch's mean is then over the batches trained since the resume.
        self._start("train", "loss_epoch")

    def on_train_epoch_start(self) -> None:
        self._start("train", "loss_epoch")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss_and_accuracy(batch)
        self._add("train", len(batch[1]), loss)
        every = self.trainer.log_every_n_steps
        if every and (self.global_step + 1) % every == 0:
            self.log("train_loss_step", loss)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self._means("train"))

    def on_validation_epoch_start(self) -> None:
        self._start("val", "loss", "acc")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._loss_and_accuracy(batch)
        self._add("val", len(batch[1]), loss, acc)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self._means("val"), prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self._start("test", "loss", "acc")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        loss, acc = self._loss_and_accuracy(batch)
        self._add("test", len(batch[1]), loss, acc)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._means("test"))


class DigitsMLP(_DigitsClassifier):
    """A multilayer perceptron on the flattened 8x8 image: ``layers`` hidden ReLU layers of ``hidden`` units.

    Example:
        >>> model = DigitsMLP(hidden=32)
        >>> tuple(model(torch.zeros(5, 1, 8, 8)).shape)
        (5, 10)
    """

    def __init__(
        self,
        hidden: int = 64,
        layers: int = 1,
        optimizer: dict[str, Any] = MLP_OPTIMIZER,
        lr_scheduler: dict[str, Any] | list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        widths = [64] + [hidden] * layers
        body = [m for a, b in itertools.pairwise(widths) for m in (torch.nn.Linear(a, b), torch.nn.ReLU())]
        self.net = torch.nn.Sequential(torch.nn.Flatten(), *body, torch.nn.Linear(widths[-1], 10))


class DigitsConvNet(_DigitsClassifier):
    """Two 3x3 convolutions (``channels``, then ``2·channels``), 2x2 max pooling and a linear classifier.

    ``batch_norm`` adds batch normalization (§8.7.1) after each convolution.

    Example:
        >>> model = DigitsConvNet(channels=8)
        >>> tuple(model(torch.zeros(5, 1, 8, 8)).shape)
        (5, 10)
    """

    def __init__(
        self,
        channels: int = 16,
        batch_norm: bool = True,
        optimizer: dict[str, Any] = CONVNET_OPTIMIZER,
        lr_scheduler: dict[str, Any] | list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

        def block(c_in: int, c_out: int) -> list[torch.nn.Module]:
            norm = [torch.nn.BatchNorm2d(c_out)] if batch_norm else []
            return [torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm), *norm, torch.nn.ReLU()]

        self.net = torch.nn.Sequential(
            *block(1, channels),
            *block(channels, 2 * channels),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(2 * channels * 16, 10),
        )


# optimizer name -> (class path, default lr, default momentum; None: the optimizer has no momentum)
_MODELS = {"mlp": DigitsMLP, "convnet": DigitsConvNet}
_OPTIMIZERS = {
    "sgd": ("lightopt.optim.SGD", None, 0.9),  # lr: the model's default
    "rmsprop": ("lightopt.optim.RMSProp", 0.01, 0.0),
    "adam": ("lightopt.optim.Adam", 0.01, 0.9),
    "adagrad": ("lightopt.optim.AdaGrad", 0.05, None),
}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a digits classifier with a lightopt optimizer and LinearDecay (eq. 8.14).",
    )
    parser.add_argument("--model", choices=tuple(_MODELS), default="mlp")
    parser.add_argument("--optimizer", choices=tuple(_OPTIMIZERS), default="sgd")
    parser.add_argument(
        "--lr",
        type=float,
        help="initial learning rate ε₀ (default: sgd 0.2 for mlp, 0.05 for "
        "convnet; rmsprop and adam 0.01; adagrad 0.05)",
    )
    parser.add_argument(
        "--momentum",
        type=float,
        help="momentum α for sgd/rmsprop, ρ1 (betas[0]) for adam "
        "(default: sgd 0.9, rmsprop 0, adam 0.9; adagrad has none)",
    )
    parser.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd, rmsprop)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty, not on biases or norm layers")
    parser.add_argument("--final-ratio", type=float, default=0.01, help="LinearDecay ε_τ/ε₀ (τ: all steps)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (tiny models run fastest on 1)")
    parser.add_argument("--log-dir", help="write TensorBoard logs and a checkpoint here (default: nothing written)")
    args = parser.parse_args(argv)
    class_path, default_lr, default_momentum = _OPTIMIZERS[args.optimizer]
    if default_momentum is None and (args.momentum is not None or args.nesterov):
        parser.error(f"--optimizer {args.optimizer} has no momentum; drop --momentum and --nesterov")
    if args.nesterov and args.optimizer == "adam":
        parser.error("--nesterov is for sgd and rmsprop")
    if min(args.epochs, args.batch_size, args.threads) < 1:
        parser.error("--epochs, --batch-size and --threads must be >= 1")
    if default_lr is None:
        default_lr = inspect.signature(_MODELS[args.model]).parameters["optimizer"].default["init_args"]["lr"]
    args.lr = default_lr if args.lr is None else args.lr
    args.momentum = default_momentum if args.momentum is None else args.momentum
    init_args: dict[str, Any] = {"lr": args.lr, "weight_decay": args.weight_decay}
    if args.optimizer == "adam":
        init_args["betas"] = (args.momentum, 0.999)
    elif args.optimizer in ("sgd", "rmsprop"):
        init_args.update(momentum=args.momentum, nesterov=args.nesterov)
    args.optimizer_config = {"class_path": class_path, "init_args": init_args, "no_decay_bias_and_norm": True}
    return args


def main(argv: list[str] | None = None) -> int:
    """Train, validate and test one model; print one summary line. Returns the exit code."""
    args = _parse_args(argv)
    quiet = {name: logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")}
    levels = {name: log.level for name, log in quiet.items()}
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        torch.set_num_threads(args.threads)
        for log in quiet.values():
            log.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
            L.seed_everything(args.seed, workers=True)
            datamodule = DigitsDataModule(batch_size=args.batch_size, seed=args.seed)
            schedule = {"class_path": "lightopt.schedules.LinearDecay", "init_args": {"final_ratio": args.final_ratio}}
            model = _MODELS[args.model](optimizer=args.optimizer_config, lr_scheduler=schedule)
            logger = L.pytorch.loggers.TensorBoardLogger(args.log_dir, name="digits") if args.log_dir else False
            trainer = L.Trainer(
                max_epochs=args.epochs,
                accelerator="cpu",
                deterministic=True,
                logger=logger,
                enable_checkpointing=bool(args.log_dir),
                enable_progress_bar=sys.stderr.isatty(),
                enable_model_summary=False,
                default_root_dir=args.log_dir,
            )
            trainer.fit(model, datamodule=datamodule)
            val = {k: float(trainer.callback_metrics[k]) for k in ("val_loss", "val_acc")}
            test = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    finally:
        torch.set_num_threads(threads)
        for name, log in quiet.items():
            log.setLevel(levels[name])
    momentum = "" if args.optimizer == "adagrad" else f" momentum={args.momentum:g}"
    momentum += " nesterov" if args.nesterov else ""
    momentum += f" weight_decay={args.weight_decay:g}" if args.weight_decay else ""
    print(
        f"digits {args.model} {args.optimizer} lr={args.lr:g}{momentum} epochs={args.epochs} seed={args.seed}: "
        f"val_loss={val['val_loss']:.4f} val_acc={val['val_acc']:.4f} test_acc={test['test_acc']:.4f} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
