"""Gradient, weight and update norms per layer, and the §8.2 warnings they support."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from lightopt._validation import check_bool, check_int, check_range

__all__ = ["GradientMonitor"]

_SHOWN_NAMES = 3
# logged with LightningModule.log too, for trainer.callback_metrics (each key costs Lightning about 0.5 ms)
_MONITORED = (
    "grad_norm/total",
    "grad_flags/vanishing",
    "grad_flags/exploding",
    "grad_flags/update_ratio",
    "grad_flags/nonfinite",
)


class GradientMonitor(Callback):
    r"""Per-layer gradient norms, weight norms and update ratios, the diagnostics of §8.2.

    Every ``log_every_n_steps`` optimizer steps it measures, per layer l (a module with
    parameters of its own, named by its path in the model; ``root`` for the LightningModule's
    own) and for the whole model (``total``):

    ==========================  ==========================================================
    key                         value
    ==========================  ==========================================================
    ``grad_norm/<layer>``       ‖g_l‖, in ``on_before_optimizer_step`` (the gradient the
                                optimizer is about to use)
    ``weight_norm/<layer>``     ‖θ_l‖, at the same moment (before the step)
    ``update_ratio/<layer>``    ‖Δθ_l‖/‖θ_l‖, Δθ measured across the optimizer step
    ``grad_flags/vanishing``    number of layers flagged as vanishing
    ``grad_flags/exploding``    1 if the total gradient norm is flagged as exploding
    ``grad_flags/update_ratio`` number of layers whose update ratio is out of bounds
    ``grad_flags/nonfinite``    optimizer steps with NaN/Inf gradients since the last log
    ==========================  ==========================================================

    **Where the values go.** All of them are written straight to every logger of the Trainer,
    in one ``logger.log_metrics(metrics, step=k)`` call per logger and measurement (on global
    rank zero), k being the ``trainer.global_step`` of the step measured, so they appear in the
    logger at exactly the measured steps, next to what the LightningModule logs at step k. The
    latest measurement is also kept in :attr:`last_metrics`. The few keys meant to be monitored,
    ``grad_norm/total`` and the four ``grad_flags/*`` counts, are in addition logged with
    ``LightningModule.log(..., logger=False)``, so that they are in ``trainer.callback_metrics``
    (and can be monitored by ``EarlyStopping`` or ``ModelCheckpoint``) until the next
    measurement; the per-layer values are not, and none of them is in ``trainer.logged_metrics``.

    Norms are Euclidean over a layer's parameters that have a gradient, viewed as one vector;
    ``grad_norm/total`` is the ‖g‖ that norm clipping compares with its threshold. The plot of
    ``grad_norm/total`` over training is the book's Figure 8.1 test: if it does not shrink to an
    insignificant size, training is not converging to a critical point (§8.2.2).

    **Flags (documented thresholds).** A layer is *vanishing* when its gradient norm is below
    ``vanishing_threshold`` times the largest layer gradient norm (relative, so it does not
    depend on the loss scale; §8.2.5, e.g. deep sigmoid chains). The gradient is *exploding*
    when ``grad_norm/total`` exceeds ``exploding_threshold`` (absolute: a well-scaled mean loss
    gives norms of order 1; §8.2.4, cliffs). A layer's update ratio is out of bounds outside
    ``update_ratio_bounds``, two decades either side of the rule of thumb ‖Δθ‖/‖θ‖ ≈ 1e-3 by
    default: far above, the steps rewrite the weights; far below, the layer barely learns.
    Each flag is logged, and warned about with ``rank_zero_warn`` at most once per
    ``warn_every_n_steps`` optimizer steps per kind. ``None`` turns a flag off.

    **Non-finite gradients** are checked on logging steps, and on every optimizer step with
    ``check_every_step=True`` (one more pass over the gradients per step: use it, with
    ``raise_on_nonfinite=True``, to stop at the first NaN, before it spreads to every layer).
    They are warned about naming the layers, or with ``raise_on_nonfinite=True`` raise a
    ``ValueError`` naming them. Under a 16-bit ``GradScaler`` an Inf is a loss-scale overflow
    that the scaler skips, so it is counted but neither warned about nor raised.

    **Cost.** Nothing between logging steps (unless ``check_every_step``). On a logging step:
    one norm per parameter tensor for g and θ, a copy of the parameters that have a gradient
    (freed after the step), one norm per tensor of Δθ, each set moved to the host in one
    transfer, one ``log_metrics`` call per logger, and ``LightningModule.log`` for the five
    monitorable keys (Lightning spends about half a millisecond per key on a CPU, and carries the
    keys through the later batches of the epoch, hence only five). On the CPU digits convnet of
    ``examples.digits`` (5 layers, 22 values per measurement, ~5 ms steps) the hooks take about
    3 ms per logging step, against 7 to 13 ms on the same machine when all 22 values went
    through ``LightningModule.log``, most of it still in ``LightningModule.log``; with n = 50
    that is about 1% of the fit. ``check_every_step=True`` adds one pass over the gradients per
    step (about 2% there, less on larger models).

    **Which gradient it sees.** Lightning unscales AMP gradients before
    ``on_before_optimizer_step`` and clips with ``Trainer(gradient_clip_val=...)`` after it, so
    the monitor logs unscaled, unclipped gradients. A gradient-clipping callback placed before
    this one in ``callbacks=[...]`` runs first, and the monitor then sees the clipped gradient.

    **Logging steps.** The monitor measures the optimizer steps whose index
    k = ``trainer.global_step`` has (k + 1) % n = 0, n = ``log_every_n_steps``: the steps n - 1,
    2n - 1, ... With the default n (the Trainer's ``log_every_n_steps``) these are the batches
    on which Lightning writes the module's own logged values, so the rows line up; any n >= 1
    works. The values of step k are written once the step is taken (at the end of its batch,
    when Δθ is known); if no step was taken, without the update ratios.

    Args:
        log_every_n_steps: measure every n optimizer steps (default: the Trainer's
            ``log_every_n_steps``).
        vanishing_threshold: relative threshold in (0, 1) (default 1e-5), or ``None``.
        exploding_threshold: absolute threshold > 0 on ``grad_norm/total`` (default 1e3), or
            ``None``.
        update_ratio_bounds: ``(low, high)`` with 0 <= low < high (default (1e-5, 1e-1)), or
            ``None``.
        check_every_step: also check for NaN/Inf between logging steps (default False).
        raise_on_nonfinite: raise ``ValueError`` instead of warning on NaN/Inf gradients.
        warn_every_n_steps: at most one warning per kind per this many steps (>= 1).

    Attributes:
        last_metrics: the values of the latest measurement, as written to the loggers.

    Example:
        >>> import lightning as L, torch
        >>> from lightopt.callbacks.gradient_monitor import GradientMonitor
        >>> class Linear(L.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layer = torch.nn.Linear(2, 1, bias=False)
        ...         torch.nn.init.constant_(self.layer.weight, 1.0)
        ...     def training_step(self, batch, batch_idx):
        ...         return self.layer(torch.tensor([[3.0, 4.0]])).sum()  # g = (3, 4)
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.01)
        >>> monitor = GradientMonitor()
        >>> trainer = L.Trainer(max_steps=1, log_every_n_steps=1, callbacks=[monitor],
        ...     logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...     enable_model_summary=False)
        >>> trainer.fit(Linear(), torch.utils.data.DataLoader(torch.zeros(1, 1)))
        >>> m = monitor.last_metrics  # what the loggers got at step 0
        >>> m["grad_norm/layer"], round(m["update_ratio/layer"], 6)  # 0.05 / √2
        (5.0, 0.035355)
        >>> float(trainer.callback_metrics["grad_norm/total"])  # monitorable keys only
        5.0
    """

    def __init__(
        self,
        log_every_n_steps: int | None = None,
        *,
        vanishing_threshold: float | None = 1e-5,
        exploding_threshold: float | None = 1e3,
        update_ratio_bounds: tuple[float, float] | None = (1e-5, 1e-1),
        check_every_step: bool = False,
        raise_on_nonfinite: bool = False,
        warn_every_n_steps: int = 1000,
    ) -> None:
        if log_every_n_steps is not None:
            log_every_n_steps = check_int("log_every_n_steps", log_every_n_steps, 1)
        if vanishing_threshold is not None:
            vanishing_threshold = check_range(
                "vanishing_threshold", vanishing_threshold, 0.0, 1.0, low_inclusive=False, high_inclusive=False
            )
        if exploding_threshold is not None:
            exploding_threshold = check_range("exploding_threshold", exploding_threshold, 0.0, low_inclusive=False)
        if update_ratio_bounds is not None:
            update_ratio_bounds = _check_bounds(update_ratio_bounds)
        self.log_every_n_steps = log_every_n_steps
        self.vanishing_threshold = vanishing_threshold
        self.exploding_threshold = exploding_threshold
        self.update_ratio_bounds = update_ratio_bounds
        self.check_every_step = check_bool("check_every_step", check_every_step)
        self.raise_on_nonfinite = check_bool("raise_on_nonfinite", raise_on_nonfinite)
        self.warn_every_n_steps = check_int("warn_every_n_steps", warn_every_n_steps, 1)
        self._every = log_every_n_steps or 50
        self._layers: list[tuple[str, list[torch.nn.Parameter]]] = []
        self._snapshot: _Snapshot | None = None
        self._nonfinite_steps = 0
        self._last_warned: dict[str, int] = {}
        self.last_metrics: dict[str, float] = {}
        # Lightning reads state_key on every hook call (profiler names): computed once
        self._state_key = self._generate_state_key(
            log_every_n_steps=log_every_n_steps,
            vanishing_threshold=vanishing_threshold,
            exploding_threshold=exploding_threshold,
            update_ratio_bounds=update_ratio_bounds,
        )

    @property
    @override
    def state_key(self) -> str:
        """Checkpoint key: the class name and the arguments that tell two monitors apart."""
        return self._state_key

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._every = self.log_every_n_steps or trainer.log_every_n_steps or 50
        seen: set[int] = set()
        self._layers = []
        for name, module in pl_module.named_modules():
            params = [p for p in module.parameters(recurse=False) if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in params)
            if params:
                self._layers.append((name or "root", params))
        self._snapshot = None

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = trainer.global_step
        logging = (step + 1) % self._every == 0
        if not (logging or self.check_every_step):
            return
        entries = [(i, p) for i, (_, params) in enumerate(self._layers) for p in params if p.grad is not None]
        if not entries:
            return
        params = [p for _, p in entries]
        norms = _norms([p.grad for p in params] + (params if logging else []))
        grad_sq = _per_layer_sq(entries, norms[: len(entries)])
        bad = [self._layers[i][0] for i, sq in grad_sq.items() if not math.isfinite(sq)]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if bad:
            self._nonfinite_steps += 1
            if scaler is None:
                message = f"GradientMonitor: non-finite gradients at step {step} in {_list(bad)}."
                if self.raise_on_nonfinite:
                    raise ValueError(message + " Check the loss and the inputs of these layers, or clip (§8.2.4).")
                self._warn("nonfinite", step, message)
        if not logging:
            return
        if self._snapshot is not None:  # several steps in one batch (manual optimization): finish the last
            self._finish(trainer, pl_module, self._snapshot)
        weight_sq = _per_layer_sq(entries, norms[len(entries) :])
        metrics: dict[str, float] = {}
        for kind, sq in (("grad_norm", grad_sq), ("weight_norm", weight_sq)):
            metrics.update({f"{kind}/{self._layers[i][0]}": math.sqrt(v) for i, v in sq.items()})
            metrics[f"{kind}/total"] = math.sqrt(sum(sq.values()))
        metrics["grad_flags/vanishing"] = float(len(self._check_vanishing(grad_sq, step)))
        metrics["grad_flags/exploding"] = float(self._check_exploding(metrics["grad_norm/total"], step))
        metrics["grad_flags/nonfinite"] = float(self._nonfinite_steps)
        self._nonfinite_steps = 0
        before = [p.detach().clone() for p in params]
        self._snapshot = _Snapshot(step, entries, before, weight_sq, metrics, finite=not bad)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None:
            self._finish(trainer, pl_module, snapshot)

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, snapshot: _Snapshot) -> None:
        """Add the update ratios (if the step was taken) and write the measurement."""
        if trainer.global_step != snapshot.step:
            self._add_update_ratios(snapshot)
        self._write(trainer, pl_module, snapshot)

    def _add_update_ratios(self, snapshot: _Snapshot) -> None:
        deltas = [b.sub_(p.detach()) for b, (_, p) in zip(snapshot.before, snapshot.entries)]
        delta_sq = _per_layer_sq(snapshot.entries, _norms(deltas))
        ratios = {i: _ratio(d, snapshot.weight_sq[i]) for i, d in delta_sq.items()}
        metrics = {f"update_ratio/{self._layers[i][0]}": r for i, r in ratios.items()}
        metrics["update_ratio/total"] = _ratio(sum(delta_sq.values()), sum(snapshot.weight_sq.values()))
        flagged: list[str] = []
        if self.update_ratio_bounds is not None and snapshot.finite:
            low, high = self.update_ratio_bounds
            flagged = [self._layers[i][0] for i, r in ratios.items() if not low <= r <= high]
            if flagged:
                self._warn(
                    "update_ratio",
                    snapshot.step,
                    f"GradientMonitor: update-to-weight ratio ‖Δθ‖/‖θ‖ outside [{low:g}, {high:g}] at step "
                    f"{snapshot.step} in {_list(flagged)} (rule of thumb: about 1e-3); "
                    "consider the learning rate of these layers.",
                )
        metrics["grad_flags/update_ratio"] = float(len(flagged))
        snapshot.metrics.update(metrics)

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, snapshot: _Snapshot) -> None:
        """All values to the loggers in one call each; the monitorable ones to ``callback_metrics``."""
        metrics = self.last_metrics = snapshot.metrics
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=snapshot.step)
        monitored = {k: metrics[k] for k in _MONITORED if k in metrics}
        pl_module.log_dict(monitored, on_step=True, on_epoch=False, logger=False)

    def _check_vanishing(self, grad_sq: dict[int, float], step: int) -> list[str]:
        finite = {i: math.sqrt(v) for i, v in grad_sq.items() if math.isfinite(v)}
        if self.vanishing_threshold is None or not finite:
            return []
        top = max(finite, key=finite.__getitem__)
        limit = self.vanishing_threshold * finite[top]
        flagged = [self._layers[i][0] for i, n in finite.items() if n < limit]
        if flagged:
            self._warn(
                "vanishing",
                step,
                f"GradientMonitor: vanishing gradients at step {step}: {_list(flagged)} have gradient norms below "
                f"{self.vanishing_threshold:g} × the largest ({finite[top]:.3g} in {self._layers[top][0]}); "
                "see §8.2.5 (saturating units, depth, initialization).",
            )
        return flagged

    def _check_exploding(self, total: float, step: int) -> bool:
        exploding = self.exploding_threshold is not None and math.isfinite(total) and total > self.exploding_threshold
        if exploding:
            self._warn(
                "exploding",
                step,
                f"GradientMonitor: exploding gradients at step {step}: total gradient norm {total:.3g} > "
                f"{self.exploding_threshold:g}; see §8.2.4 (cliffs) and consider gradient clipping.",
            )
        return exploding

    def _warn(self, kind: str, step: int, message: str) -> None:
        last = self._last_warned.get(kind)
        if last is None or step - last >= self.warn_every_n_steps or step < last:
            self._last_warned[kind] = step
            rank_zero_warn(message)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"nonfinite_steps": self._nonfinite_steps, "last_warned": dict(self._last_warned)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._nonfinite_steps = state_dict.get("nonfinite_steps", 0)
        self._last_warned = dict(state_dict.get("last_warned", {}))

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = checkpoint.get("callbacks", {})
        legacy = type(self).__qualname__  # the key before GradientMonitor had a state_key of its own
        if self.state_key not in states and legacy in states:
            self.load_state_dict(states[legacy])


class _Snapshot:
    """What a logging step keeps until the end of its batch."""

    __slots__ = ("before", "entries", "finite", "metrics", "step", "weight_sq")

    def __init__(
        self,
        step: int,
        entries: list,
        before: list[torch.Tensor],
        weight_sq: dict[int, float],
        metrics: dict[str, float],
        finite: bool,
    ):
        self.step, self.entries, self.before, self.weight_sq = step, entries, before, weight_sq
        self.metrics, self.finite = metrics, finite


def _norms(tensors: Sequence[torch.Tensor]) -> list[float]:
    """Euclidean norm of each tensor, moved to the host in one transfer."""
    wide = (torch.float64,)
    norms = [torch.linalg.vector_norm(t, dtype=t.dtype if t.dtype in wide else torch.float32) for t in tensors]
    device = norms[0].device
    return torch.stack([n.to(device) for n in norms]).tolist()


def _per_layer_sq(entries: list[tuple[int, torch.Tensor]], norms: list[float]) -> dict[int, float]:
    """Sum of squared tensor norms per layer index (only layers with an entry)."""
    sq: dict[int, float] = {}
    for (i, _), n in zip(entries, norms):
        sq[i] = sq.get(i, 0.0) + n * n
    return sq


def _ratio(delta_sq: float, weight_sq: float) -> float:
    if weight_sq > 0:
        return math.sqrt(delta_sq / weight_sq)
    return math.inf if delta_sq > 0 else 0.0


def _list(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN_NAMES])
    return shown + (f" (+{len(names) - _SHOWN_NAMES} more)" if len(names) > _SHOWN_NAMES else "")


def _check_bounds(bounds: Any) -> tuple[float, float]:
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise TypeError(
            f"`update_ratio_bounds` must be a pair (low, high) or None, but got update_ratio_bounds={bounds!r}."
        )
    low = check_range("update_ratio_bounds[0]", bounds[0], 0.0)
    high = check_range("update_ratio_bounds[1]", bounds[1], low, low_inclusive=False)
    return low, high
