"""Early stopping that keeps and restores the best parameters, Algorithm 7.1 (§7.8)."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping as _LightningEarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from typing_extensions import override

from lightopt import _validation
from lightopt.callbacks._best_weights import check_same_layout, copy_to, validated_module, writes_weights_at_train_end

__all__ = ["EarlyStopping"]

#: Top-level checkpoint key under which θ* is saved, one entry per ``state_key``.
BEST_WEIGHTS_KEY = "early_stopping_best_weights"


class EarlyStopping(_LightningEarlyStopping):
    r"""Early stopping, Algorithm 7.1 (§7.8), keeping θ* and i* and restoring θ* at the end.

    .. math::
        \begin{aligned}
        &\theta \leftarrow \theta_o;\ i \leftarrow 0;\ j \leftarrow 0;\ v \leftarrow \infty;
            \ \theta^* \leftarrow \theta;\ i^* \leftarrow i \\
        &\textbf{while } j < p \\
        &\quad \text{train for } n \text{ steps};\ i \leftarrow i + n \\
        &\quad v' \leftarrow \text{ValidationSetError}(\theta) \\
        &\quad \textbf{if } v' < v \textbf{ then } j \leftarrow 0;\ \theta^* \leftarrow \theta;
            \ i^* \leftarrow i;\ v \leftarrow v' \\
        &\quad \textbf{else } j \leftarrow j + 1 \\
        &\textbf{return } \theta^*,\ i^*
        \end{aligned}

    ==========  ==========================  =============================================
    book        here                        meaning
    ==========  ==========================  =============================================
    n           ``val_check_interval`` /    training steps between evaluations (Trainer)
                ``check_val_every_n_epoch``
    p           ``patience``                evaluations without improvement before stopping
    v'          ``monitor``                 the validation error, logged by the module
    v           ``best_score``              best value seen
    j           ``wait_count``              evaluations since the last improvement
    θ*          (state)                     the module's ``state_dict`` at the best value
    i*          ``best_step``               ``trainer.global_step`` at the best value
    ==========  ==========================  =============================================

    A drop-in subclass of Lightning's ``EarlyStopping``: the same arguments, the same stopping
    rule (improvement is ``current < best − min_delta``, the book's strict ``v' < v`` at
    ``min_delta=0``; stop when ``wait_count >= patience``, the book's ``while j < p``) and the same
    checkpoint ``state_key``. On each improvement it also records i* (``best_step``) and the epoch
    (``best_epoch``) and, with ``restore_best_weights=True``, copies the module's ``state_dict``
    (parameters and buffers) to ``best_weights_device``, or writes it to ``best_weights_path``;
    the book keeps θ* "in host memory or on a disk drive". θ* is loaded back into the module
    however fitting ends: this callback's stop, another callback's ``trainer.should_stop``,
    ``max_epochs``/``max_steps``, an exception raised during fitting (for example a pruned
    Optuna trial) or a KeyboardInterrupt. The copy is bit-exact.

    **θ* is the weights that were scored.** A weight-averaging callback (:class:`PolyakAveraging`,
    Lightning's ``WeightAveraging``/``EMAWeightAveraging``) swaps its average into the module for
    validation and back before this callback reads the metric; when validation logged the
    monitored value, θ* is a copy of that average (taken as validation ends, on improvement only),
    otherwise (a metric logged in training) the module's own weights. Such callbacks, and
    Lightning's ``StochasticWeightAveraging``, write their average into the module in
    ``on_train_end``; when one is listed after this callback, θ* is loaded again in ``on_fit_end``,
    so the module ends with θ* in either order. Use one weight-averaging callback per Trainer.

    **Checkpoints.** ``state_dict`` holds Lightning's fields plus ``best_step``, ``best_epoch``
    and ``best_weights_file``: numbers and a 0-d tensor, so states compare with ``==`` as
    Lightning's do. θ* itself is written by :meth:`on_save_checkpoint` to the checkpoint's
    top-level ``"early_stopping_best_weights"`` entry, keyed by :attr:`state_key`, so a run resumed
    from a checkpoint still restores the best parameters it found before the interruption. Cost:
    every checkpoint carries one extra copy of the module's ``state_dict`` (with
    ``best_weights_path``, only the file name). A state saved by earlier lightopt versions, with θ*
    inside it, still loads.

    Differences from the book:
        * θ* starts empty rather than at θ_o: if no evaluation improved (say the first value is
          NaN with ``check_finite``), the parameters are left as they are.
        * ``check_finite``, ``stopping_threshold`` and ``divergence_threshold`` are Lightning's
          extra stopping rules.

    Differences from Lightning's ``EarlyStopping``:
        * Keeps and restores θ* (Lightning's needs a ``ModelCheckpoint`` and a reload).
        * With ``restore_best_weights=True``, a check that stops because ``stopping_threshold``
          was reached also counts as an improvement when it beats ``best_score`` (Lightning stops
          without updating it), so θ* is the parameters that reached the threshold. With
          ``restore_best_weights=False`` the callback behaves exactly as Lightning's.
        * Bad ``mode``, ``patience`` or ``min_delta`` raise ``ValueError``/``TypeError`` (Lightning:
          ``MisconfigurationException`` for ``mode``).
        * A module attribute that is not in its ``state_dict`` (say a :class:`Continuation`
          temperature) is not part of θ*: register it as a buffer to have it restored too.

    Args:
        monitor, min_delta, patience, verbose, mode, strict, check_finite, stopping_threshold,
        divergence_threshold, check_on_train_epoch_end, log_rank_zero_only: as in Lightning's
            ``EarlyStopping``.
        restore_best_weights: keep θ* and load it into the module when fitting ends.
        best_weights_device: where the in-memory copy of θ* lives (default host memory).
        best_weights_path: write θ* to this file with ``torch.save`` on each improvement (global
            rank 0 only; other ranks read it back, so it must be on a shared file system)
            instead of keeping it in memory.

    Attributes:
        best_score: v, the best monitored value (a tensor, ``inf`` before the first check).
        best_step: i*, ``trainer.global_step`` at the best value (0 before the first).
        best_epoch: ``trainer.current_epoch`` at the best value (``None`` before the first).

    Raises:
        RuntimeError: the monitored metric is missing (``strict=True``); the message lists the
            metrics that were logged.
        ValueError: θ* cannot be loaded because the module's parameter names or shapes changed;
            the message names them.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader
        >>> from lightning.pytorch import LightningModule, Trainer
        >>> from lightopt.callbacks import EarlyStopping
        >>> class Scripted(LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layer = torch.nn.Linear(1, 1)
        ...     def training_step(self, batch, batch_idx):
        ...         return self.layer(batch).pow(2).mean()
        ...     def validation_step(self, batch, batch_idx):
        ...         errors = [5.0, 4.0, 3.0, 3.5, 2.9, 3.0, 3.1, 3.2, 3.3, 1.0]
        ...         self.log("val_error", errors[self.global_step - 1])
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        ...     def train_dataloader(self):
        ...         return DataLoader(torch.ones(1, 1))
        ...     def val_dataloader(self):
        ...         return DataLoader(torch.ones(1, 1))
        >>> early_stopping = EarlyStopping("val_error", patience=3)
        >>> trainer = Trainer(max_epochs=10, callbacks=[early_stopping], logger=False,
        ...                   enable_checkpointing=False, enable_progress_bar=False,
        ...                   enable_model_summary=False)
        >>> trainer.fit(Scripted())
        >>> early_stopping.best_step, round(early_stopping.best_score.item(), 4), trainer.global_step
        (5, 2.9, 8)
    """

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
        log_rank_zero_only: bool = False,
        *,
        restore_best_weights: bool = True,
        best_weights_device: str | torch.device = "cpu",
        best_weights_path: str | os.PathLike | None = None,
    ) -> None:
        _validation.check_range("min_delta", min_delta, low=0.0)
        _validation.check_int("patience", patience, low=0)
        _validation.check_choice("mode", mode, tuple(self.mode_dict))
        restore_best_weights = _validation.check_bool("restore_best_weights", restore_best_weights)
        best_weights_device = _check_device(best_weights_device)
        if best_weights_path is not None:
            if not isinstance(best_weights_path, (str, os.PathLike)):
                raise TypeError(
                    "`best_weights_path` must be a path or None, but got "
                    f"best_weights_path={best_weights_path!r} ({type(best_weights_path).__name__})."
                )
            if not restore_best_weights:
                raise ValueError(
                    "`best_weights_path` is only used with restore_best_weights=True, but got "
                    "restore_best_weights=False; drop `best_weights_path` or enable restoring."
                )
            best_weights_path = os.fspath(best_weights_path)
        super().__init__(
            monitor,
            min_delta,
            patience,
            verbose,
            mode,
            strict,
            check_finite,
            stopping_threshold,
            divergence_threshold,
            check_on_train_epoch_end,
            log_rank_zero_only,
        )
        self.restore_best_weights = restore_best_weights
        self.best_weights_device = best_weights_device
        self.best_weights_path = best_weights_path
        self.best_step = 0
        self.best_epoch: int | None = None
        self._best_weights: dict[str, Any] | None = None  # θ* in memory
        self._best_weights_file: str | None = None  # or the file that holds θ*
        self._restored = False
        self._metric_before_validation: Any = None  # the monitored value when validation began
        self._scored: tuple[int, torch.Tensor, dict[str, Any]] | None = None  # (i, v', weights scored)

    # -- Algorithm 7.1: the "if v' < v" branch, after Lightning's check ------------------------

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        before = self.best_score, self.stopping_reason_message
        super().on_train_epoch_end(trainer, pl_module)
        self._after_check(trainer, pl_module, *before)

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._metric_before_validation = trainer.callback_metrics.get(self.monitor)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._note_scored_weights(trainer)
        before = self.best_score, self.stopping_reason_message
        super().on_validation_end(trainer, pl_module)
        self._after_check(trainer, pl_module, *before)

    def _note_scored_weights(self, trainer: Trainer) -> None:
        """Keep the averaged weights a validation round scored, if it logged an improvement on them.

        A weight-averaging callback swaps its average in for validation and back before this hook,
        so the model holds the raw iterate while the metric scored the average. The copy is taken
        now, since the average may move before a check at ``on_train_epoch_end``, and only when the
        value improves on ``best_score`` (one copy per improvement, as without averaging).
        """
        self._scored = None
        value = trainer.callback_metrics.get(self.monitor)
        if not self.restore_best_weights or value is None or value is self._metric_before_validation:
            return  # validation did not log the monitored metric: it scored no weights
        module = validated_module(trainer)
        if module is None:
            return  # validation ran on the model's own weights
        current = torch.as_tensor(value).squeeze()
        best = self.best_score.to(current.device)
        if torch.isfinite(current) and self.monitor_op(current - self.min_delta, best):
            device = self.best_weights_device if self.best_weights_path is None else torch.device("cpu")
            weights = {k: copy_to(v, device) for k, v in module.state_dict().items()}
            self._scored = trainer.global_step, current.detach().clone(), weights

    def _after_check(self, trainer: Trainer, pl_module: LightningModule, best: Any, message: Any) -> None:
        if self.best_score is not best:  # Lightning took its improvement branch: j ← 0, v ← v'
            self._record_best(trainer, pl_module)
            return
        reached_threshold = (
            self.restore_best_weights
            and self.stopping_reason_message is not message
            and self.stopping_reason is EarlyStoppingReason.STOPPING_THRESHOLD
        )
        if reached_threshold:
            current = trainer.callback_metrics[self.monitor].squeeze()
            if self.monitor_op(current - self.min_delta, self.best_score.to(current.device)):
                self.best_score = current
                self.wait_count = 0
                self._record_best(trainer, pl_module)

    def _is_scored_value(self, trainer: Trainer, step: int, value: torch.Tensor) -> bool:
        """Whether the value being checked is the one the last validation round logged."""
        current = trainer.callback_metrics.get(self.monitor)
        if current is None or trainer.global_step != step:
            return False
        current = torch.as_tensor(current).squeeze()
        return bool(torch.equal(current.detach().to(value.device), value))

    def _record_best(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.best_step = trainer.global_step  # i* ← i
        self.best_epoch = trainer.current_epoch
        if not self.restore_best_weights:
            return
        scored, self._scored = self._scored, None
        if scored is not None and self._is_scored_value(trainer, *scored[:2]):
            best = scored[2]  # θ* ← the averaged weights validation scored (already copied)
        else:
            device = self.best_weights_device if self.best_weights_path is None else torch.device("cpu")
            best = {k: copy_to(v, device) for k, v in pl_module.state_dict().items()}  # θ* ← θ
        if self.best_weights_path is None:
            self._best_weights = best
            return
        if trainer.is_global_zero:
            tmp = f"{self.best_weights_path}.tmp"
            os.makedirs(os.path.dirname(os.path.abspath(self.best_weights_path)), exist_ok=True)
            torch.save(best, tmp)
            os.replace(tmp, self.best_weights_path)
        self._best_weights_file = self.best_weights_path

    # -- return θ*, however fitting ends -------------------------------------------------------

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restored = False
        self._scored = None

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore(trainer, pl_module, barrier=True)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Fitting can end without `on_train_end`: resuming from a checkpoint of a finished run.
        # A weight-averaging callback listed after this one wrote its average over θ* in its own
        # `on_train_end`: θ* is what was scored, so it is loaded again.
        position = next((i for i, c in enumerate(trainer.callbacks) if c is self), len(trainer.callbacks))
        overwritten = any(writes_weights_at_train_end(c) for c in trainer.callbacks[position + 1 :])
        if not self._restored or overwritten:
            self._restore(trainer, pl_module, barrier=True)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not self._restored:
            self._restore(trainer, pl_module, barrier=False)

    def _restore(self, trainer: Trainer, pl_module: LightningModule, *, barrier: bool) -> None:
        if not self.restore_best_weights:
            return
        if self._best_weights_file is not None:
            if barrier:
                trainer.strategy.barrier("lightopt_early_stopping_restore")
            best = torch.load(self._best_weights_file, map_location="cpu", weights_only=True)
        elif self._best_weights is not None:
            best = self._best_weights
        else:
            return
        again = self._restored
        self._restored = True  # also when the check below fails: `on_exception` must not retry
        check_same_layout(best, pl_module.state_dict(), self.monitor)
        pl_module.load_state_dict(best)
        if self.verbose and not again:
            rank_zero_info(
                f"EarlyStopping restored the best weights: {self.monitor} = {float(self.best_score):.6g}"
                f" at global step {self.best_step}."
            )

    # -- checkpoint state ------------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        """Lightning's fields plus ``best_step``, ``best_epoch`` and ``best_weights_file``.

        Only scalars and a 0-d tensor, so two states compare with ``==`` as Lightning's do; θ* itself
        goes into the checkpoint through :meth:`on_save_checkpoint`.
        """
        state = super().state_dict()
        state.update(best_step=self.best_step, best_epoch=self.best_epoch, best_weights_file=self._best_weights_file)
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_step = state_dict.get("best_step", 0)
        self.best_epoch = state_dict.get("best_epoch")
        self._best_weights_file = state_dict.get("best_weights_file")
        if state_dict.get("best_weights") is not None:  # saved by lightopt before θ* had its own key
            self._set_best_weights(state_dict["best_weights"])

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Save θ* in ``checkpoint["early_stopping_best_weights"][state_key]`` (in-memory θ* only)."""
        if self._best_weights is not None:
            checkpoint.setdefault(BEST_WEIGHTS_KEY, {})[self.state_key] = self._best_weights

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        best = checkpoint.get(BEST_WEIGHTS_KEY, {}).get(self.state_key)
        if best is not None:
            self._set_best_weights(best)

    def _set_best_weights(self, best: dict[str, Any]) -> None:
        self._best_weights = {k: copy_to(v, self.best_weights_device) for k, v in best.items()}


def _check_device(device: Any) -> torch.device:
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            "`best_weights_device` must be a string or torch.device, but got "
            f"best_weights_device={device!r} ({type(device).__name__})."
        )
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"`best_weights_device` must name a torch device such as 'cpu' or 'cuda:0', but got "
            f"best_weights_device={device!r}."
        ) from err
