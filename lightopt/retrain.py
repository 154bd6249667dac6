r"""Using all the data after early stopping: Algorithms 7.2 and 7.3 (§7.8).

Early stopping (Algorithm 7.1, :class:`lightopt.callbacks.EarlyStopping`) sets part of the
training data aside for validation. These two drivers bring it back afterwards:

* :func:`retrain_on_all_data` (Algorithm 7.2) trains a fresh initialization on training plus
  validation data for i* steps, or for as many passes through the data as the first run made.
* :func:`continue_on_all_data` (Algorithm 7.3) keeps θ* and continues on training plus
  validation data until the validation loss is at most the training loss at the stop.

**Data contract.** The book's training set (X_train) is Lightning's training data (the
book's *subtrain* set) plus its validation data. A datamodule passed here serves it in one of
two ways:

* it has a ``train_plus_val_dataloader()`` method returning a ``DataLoader`` over both (its
  ``train_dataloader()`` stays the subtrain set), or
* it was built to train on both, declared by a true ``train_plus_val`` attribute or
  hyperparameter, as ``examples.digits.DigitsDataModule(train_plus_val=True)``; its
  ``train_dataloader()`` then serves both and its ``val_dataloader()`` the validation set.

Algorithm 7.3 also calls ``val_dataloader()``. Lightning runs the datamodule's ``prepare_data``,
``setup`` and ``teardown`` as in any ``fit``; other datamodule hooks (batch transfer) are not
forwarded.

=========================  ===========================================================
book                       Lightning
=========================  ===========================================================
X_subtrain, X_valid        ``train_dataloader()``, ``val_dataloader()``
X_train                    ``train_plus_val_dataloader()``, or ``train_dataloader()``
                           of a ``train_plus_val=True`` datamodule
i*                         ``EarlyStopping.best_step`` (``trainer.global_step``)
ε (Alg. 7.3)               ``subtrain_loss``, J(θ*) on X_subtrain
n (Alg. 7.3)               ``check_every_n_steps`` (``Trainer(val_check_interval=...)``)
=========================  ===========================================================
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping as _LightningEarlyStopping
from typing_extensions import override

from lightopt import _validation

__all__ = ["ContinueResult", "continue_on_all_data", "retrain_on_all_data"]


@dataclass(frozen=True)
class ContinueResult:
    """What :func:`continue_on_all_data` did.

    Attributes:
        module: the module, trained further in place.
        trainer: the ``Trainer`` that ran the continuation.
        target: ε, the subtrain loss the validation loss had to reach.
        steps: optimizer steps run on all the data.
        reached: whether the validation loss reached ``<= target`` (else ``max_steps`` ran out,
            or the loss became NaN or infinite).
        val_loss: the last validation loss seen.
    """

    module: LightningModule
    trainer: Trainer
    target: float
    steps: int
    reached: bool
    val_loss: float


def retrain_on_all_data(
    module_factory: Callable[[], LightningModule],
    datamodule: Any,
    best_step: int,
    *,
    match: str = "steps",
    trainer_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> tuple[LightningModule, Trainer]:
    r"""Retrain from scratch on all the data, Algorithm 7.2 (§7.8).

    .. math::
        \begin{aligned}
        &\text{split } X^{(train)} \text{ into } X^{(subtrain)}, X^{(valid)} \\
        &i^* \leftarrow \text{Algorithm 7.1 on } X^{(subtrain)}, X^{(valid)} \\
        &\theta \leftarrow \text{random values again} \\
        &\text{train on } X^{(train)} \text{ for } i^* \text{ steps}
        \end{aligned}

    The book sees "not a good way of knowing whether to retrain for the same number of
    parameter updates or the same number of passes through the dataset", so ``match`` picks:
    ``"steps"`` runs exactly i* optimizer steps; ``"epochs"`` runs the same number of passes,
    i* / S_sub, over the larger data set: ``round(i* · S_all / S_sub)`` steps, where S is the
    number of optimizer steps per epoch, ``ceil(batches / accumulate_grad_batches)``. To count
    batches it calls the datamodule's ``prepare_data()`` and ``setup("fit")`` once before fitting.
    S_sub is ``len(train_dataloader())``, or, for a ``train_plus_val=True`` datamodule, the
    batches of ``batch_size`` that the training set less the validation set fills.
    ``limit_train_batches`` is not allowed with ``"epochs"``.

    Lightning mapping: one ``Trainer(max_steps=..., max_epochs=-1, **trainer_kwargs).fit`` on
    the training plus validation data, with no validation and no early stopping.

    Args:
        module_factory: called once, after seeding, for a freshly initialized module.
        datamodule: serves training plus validation data (module docstring).
        best_step: i*, e.g. ``EarlyStopping.best_step`` from the first run (>= 1).
        match: ``"steps"`` or ``"epochs"``.
        trainer_kwargs: further ``Trainer`` arguments, except ``max_steps`` and ``max_epochs``.
        seed: passed to ``seed_everything`` before the factory is called; ``None`` leaves the
            random state alone. The first run's seed reproduces its θ_o.

    Returns:
        The trained module and its trainer (``trainer.global_step`` is the number of steps run).

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from lightning.pytorch import LightningDataModule, LightningModule
        >>> from lightopt.retrain import retrain_on_all_data
        >>> class Data(LightningDataModule):
        ...     def train_dataloader(self):  # X_subtrain: 4 batches
        ...         return DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
        ...     def train_plus_val_dataloader(self):  # X_train: 5 batches
        ...         return DataLoader(TensorDataset(torch.randn(10, 2)), batch_size=2)
        >>> class Model(LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layer = torch.nn.Linear(2, 1)
        ...     def training_step(self, batch, batch_idx):
        ...         return self.layer(batch[0]).pow(2).mean()
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        >>> quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...              enable_model_summary=False)
        >>> _, trainer = retrain_on_all_data(Model, Data(), 8, trainer_kwargs=quiet, seed=0)
        >>> trainer.global_step
        8
        >>> _, trainer = retrain_on_all_data(Model, Data(), 8, match="epochs", trainer_kwargs=quiet)
        >>> trainer.global_step, trainer.current_epoch  # 2 passes of 5 batches
        (10, 2)
    """
    if not callable(module_factory):
        raise TypeError(
            f"`module_factory` must be callable, but got module_factory={module_factory!r} "
            f"({type(module_factory).__name__})."
        )
    _check_datamodule(datamodule, needs_val=False)
    best_step = _validation.check_int("best_step", best_step, low=1)
    _validation.check_choice("match", match, ("steps", "epochs"))
    kwargs = _check_trainer_kwargs(trainer_kwargs, reserved=("max_steps", "max_epochs"))
    for callback in kwargs.get("callbacks") or []:
        if isinstance(callback, _LightningEarlyStopping):
            raise ValueError(
                "`trainer_kwargs['callbacks']` must not contain an EarlyStopping callback: "
                "Algorithm 7.2 trains for a fixed number of steps. Remove it."
            )
    if seed is not None:
        seed = _validation.check_int("seed", seed)

    steps = best_step
    if match == "epochs":
        if "limit_train_batches" in kwargs:
            raise ValueError(
                "`limit_train_batches` cannot be combined with match='epochs': an epoch is then no "
                "longer a pass through the data. Use match='steps' or drop `limit_train_batches`."
            )
        batches_sub, batches_all = _batches_per_epoch(datamodule)
        accumulate = kwargs.get("accumulate_grad_batches", 1)
        per_epoch_sub, per_epoch_all = (math.ceil(b / accumulate) for b in (batches_sub, batches_all))
        steps = max(1, round(best_step * per_epoch_all / per_epoch_sub))

    if seed is not None:
        seed_everything(seed, workers=True)
    module = module_factory()
    if not isinstance(module, LightningModule):
        raise TypeError(f"`module_factory` must return a LightningModule, but it returned {type(module).__name__}.")
    trainer = Trainer(max_steps=steps, max_epochs=-1, **kwargs)
    with warnings.catch_warnings():  # no validation here by design
        warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
        trainer.fit(module, datamodule=_AllData(datamodule))
    return module, trainer


def continue_on_all_data(
    module: LightningModule,
    datamodule: Any,
    subtrain_loss: float,
    *,
    max_steps: int,
    check_every_n_steps: int | None = None,
    monitor: str = "val_loss",
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> ContinueResult:
    r"""Continue from θ* on all the data until the validation loss reaches ε, Algorithm 7.3 (§7.8).

    .. math::
        \begin{aligned}
        &\theta^* \leftarrow \text{Algorithm 7.1 on } X^{(subtrain)}, X^{(valid)} \\
        &\epsilon \leftarrow J(\theta^*, X^{(subtrain)}, y^{(subtrain)}) \\
        &\textbf{while } J(\theta, X^{(valid)}, y^{(valid)}) > \epsilon \\
        &\quad \text{train on } X^{(train)}, y^{(train)} \text{ for } n \text{ steps}
        \end{aligned}

    J is the training objective (the loss), not an error rate. Validation runs once before any
    training, as the ``while`` test does, then every ``check_every_n_steps`` optimizer steps (or
    once per epoch when ``None``). Training stops at the first check with J_valid ``<=`` ε, the
    book's test; Lightning's ``stopping_threshold`` is strict ``<``, so it is not used. The book
    warns the loop is "not even guaranteed to terminate": ``max_steps`` bounds it, and a NaN or
    infinite validation loss ends it as not reached.

    Lightning mapping: ``Trainer(max_steps=max_steps, max_epochs=-1,
    val_check_interval=n · accumulate_grad_batches, check_val_every_n_epoch=None)``, one
    ``validate`` and then one ``fit`` on the training plus validation data, validating on
    ``val_dataloader()``. The module keeps its weights (θ*), but ``fit`` builds its optimizers
    afresh from ``configure_optimizers``, so momentum and similar state start from zero.

    Args:
        module: the module holding θ*, e.g. after :class:`lightopt.callbacks.EarlyStopping`
            restored it.
        datamodule: serves training plus validation data (module docstring), and has
            ``val_dataloader()``.
        subtrain_loss: ε, the loss of θ* on the training (subtrain) data, e.g.
            ``trainer.validate(module, dataloaders=datamodule.train_dataloader())``.
        max_steps: the most optimizer steps to run (>= 1).
        check_every_n_steps: n, optimizer steps between validations; ``None`` is once per epoch.
        monitor: the validation loss the module logs in ``validation_step``.
        trainer_kwargs: further ``Trainer`` arguments, except ``max_steps``, ``max_epochs``,
            ``val_check_interval`` and ``check_val_every_n_epoch``.

    Returns:
        A :class:`ContinueResult`: steps run, whether ε was reached, the last validation loss.

    Raises:
        RuntimeError: the module does not log ``monitor`` during validation; the message lists
            the metrics it does log.
    """
    if not isinstance(module, LightningModule):
        raise TypeError(f"`module` must be a LightningModule, but got {type(module).__name__}.")
    _check_datamodule(datamodule, needs_val=True)
    target = _validation.check_number("subtrain_loss", subtrain_loss)
    max_steps = _validation.check_int("max_steps", max_steps, low=1)
    if check_every_n_steps is not None:
        check_every_n_steps = _validation.check_int("check_every_n_steps", check_every_n_steps, low=1)
    if not isinstance(monitor, str):
        raise TypeError(f"`monitor` must be a string, but got monitor={monitor!r} ({type(monitor).__name__}).")
    kwargs = _check_trainer_kwargs(
        trainer_kwargs, reserved=("max_steps", "max_epochs", "val_check_interval", "check_val_every_n_epoch")
    )

    stop = _ValidationTarget(monitor, target)
    kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), stop]
    if check_every_n_steps is None:
        interval: dict[str, Any] = dict(val_check_interval=1.0, check_val_every_n_epoch=1)
    else:
        accumulate = kwargs.get("accumulate_grad_batches", 1)
        interval = dict(val_check_interval=check_every_n_steps * accumulate, check_val_every_n_epoch=None)
    trainer = Trainer(max_steps=max_steps, max_epochs=-1, **interval, **kwargs)
    data = _AllDataWithVal(datamodule)

    trainer.validate(module, datamodule=data, verbose=False)  # the first `while` test, at θ*
    if not stop.reached and stop.finite:
        trainer.fit(module, datamodule=data)
    assert stop.val_loss is not None  # set by the validation above
    return ContinueResult(
        module=module,
        trainer=trainer,
        target=target,
        steps=trainer.global_step,
        reached=stop.reached,
        val_loss=stop.val_loss,
    )


class _ValidationTarget(Callback):
    """Stops fitting at the first validation with ``monitor <= target`` (Algorithm 7.3's test)."""

    def __init__(self, monitor: str, target: float) -> None:
        self.monitor = monitor
        self.target = target
        self.reached = False
        self.finite = True
        self.val_loss: float | None = None

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise RuntimeError(
                f"continue_on_all_data monitors `{self.monitor}`, which the module did not log during "
                f"validation. Log it in `validation_step`, or pass `monitor=` one of the following: "
                f"`{'`, `'.join(metrics)}`"
            )
        self.val_loss = float(metrics[self.monitor])
        self.finite = math.isfinite(self.val_loss)
        self.reached = self.val_loss <= self.target  # the book's test; False for NaN
        if self.reached or not self.finite:
            trainer.should_stop = True


class _AllData(LightningDataModule):
    """Serves the training plus validation data for training; delegates the set-up hooks."""

    def __init__(self, datamodule: Any) -> None:
        super().__init__()
        self.datamodule = datamodule

    def prepare_data(self) -> None:
        if hasattr(self.datamodule, "prepare_data"):
            self.datamodule.prepare_data()

    def setup(self, stage: str) -> None:
        if isinstance(self.datamodule, LightningDataModule):
            self.datamodule.trainer = self.trainer
        if hasattr(self.datamodule, "setup"):
            self.datamodule.setup(stage)

    def teardown(self, stage: str) -> None:
        if hasattr(self.datamodule, "teardown"):
            self.datamodule.teardown(stage)

    def train_dataloader(self) -> Any:
        return _train_plus_val_loader(self.datamodule)


class _AllDataWithVal(_AllData):
    def val_dataloader(self) -> Any:
        return self.datamodule.val_dataloader()


def _has_method(datamodule: Any) -> bool:
    return callable(getattr(datamodule, "train_plus_val_dataloader", None))


def _has_flag(datamodule: Any) -> bool:
    hparams = getattr(datamodule, "hparams", None)
    flag = getattr(datamodule, "train_plus_val", None)
    if flag is None and isinstance(hparams, Mapping):
        flag = hparams.get("train_plus_val")
    return flag is True


def _train_plus_val_loader(datamodule: Any) -> Any:
    if _has_method(datamodule):
        return datamodule.train_plus_val_dataloader()
    return datamodule.train_dataloader()  # a train_plus_val=True datamodule


def _batches_per_epoch(datamodule: Any) -> tuple[int, int]:
    """Batches per epoch on the subtrain set and on the training plus validation data."""
    for hook, args in (("prepare_data", ()), ("setup", ("fit",))):
        if callable(getattr(datamodule, hook, None)):
            getattr(datamodule, hook)(*args)
    loader_all = _train_plus_val_loader(datamodule)
    if _has_method(datamodule):
        return len(datamodule.train_dataloader()), len(loader_all)
    batch_size = getattr(loader_all, "batch_size", None)
    if batch_size is None:
        raise ValueError(
            "match='epochs' needs the training DataLoader's `batch_size` to count the subtrain "
            "batches of a train_plus_val=True datamodule; give the datamodule a "
            "`train_plus_val_dataloader()` method instead, or use match='steps'."
        )
    examples = len(loader_all.dataset) - len(datamodule.val_dataloader().dataset)
    batches = examples // batch_size if loader_all.drop_last else math.ceil(examples / batch_size)
    return batches, len(loader_all)


def _check_datamodule(datamodule: Any, *, needs_val: bool) -> None:
    if not (_has_method(datamodule) or _has_flag(datamodule)):
        raise TypeError(
            f"`datamodule` must serve the training and validation data together, but "
            f"{type(datamodule).__name__} has no `train_plus_val_dataloader()` method and no true "
            f"`train_plus_val` flag. Add the method, or build the datamodule with "
            f"train_plus_val=True (as examples.digits.DigitsDataModule)."
        )
    if needs_val and not callable(getattr(datamodule, "val_dataloader", None)):
        raise TypeError(
            f"`datamodule` must have a `val_dataloader()` method for Algorithm 7.3, but "
            f"{type(datamodule).__name__} has none."
        )


def _check_trainer_kwargs(trainer_kwargs: Mapping[str, Any] | None, *, reserved: tuple[str, ...]) -> dict[str, Any]:
    if trainer_kwargs is None:
        return {}
    if not isinstance(trainer_kwargs, Mapping):
        raise TypeError(
            f"`trainer_kwargs` must be a mapping of Trainer arguments or None, but got "
            f"trainer_kwargs={trainer_kwargs!r} ({type(trainer_kwargs).__name__})."
        )
    clashes = [key for key in reserved if key in trainer_kwargs]
    if clashes:
        raise ValueError(
            f"`trainer_kwargs` must not set {', '.join(f'`{k}`' for k in clashes)}: this function "
            f"sets {'them' if len(clashes) > 1 else 'it'}. Remove {'them' if len(clashes) > 1 else 'it'}."
        )
    return dict(trainer_kwargs)
