"""Curvature along the gradient, the ill-conditioning diagnostic of §8.2.1 (eq. 8.10)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from lightopt._validation import check_bool, check_int, check_number

__all__ = ["CurvatureMonitor"]

LossFn = Callable[["pl.LightningModule", Any], torch.Tensor]


class CurvatureMonitor(Callback):
    r"""Curvature along the gradient and the predicted change of eq. 8.10 (§8.2.1).

    A gradient step :math:`-\epsilon g` changes a second-order model of the cost by

    .. math::
        J(\theta - \epsilon g) - J(\theta) \approx
        \tfrac{1}{2}\epsilon^2 g^\top H g - \epsilon g^\top g \qquad (8.10)

    so the step is predicted to *increase* the cost when the curvature term dominates,
    :math:`\rho = \tfrac{1}{2}\epsilon\, g^\top H g / g^\top g > 1`. Every ``every_n_steps``
    optimizer steps the callback evaluates the loss on the current training batch, at the
    parameters about to be updated, and computes :math:`g^\top g` and :math:`g^\top H g` with one
    Hessian-vector product (double backward); optionally the dominant Hessian eigenvalue by power
    iteration.

    ====================  ==========================  ===========================================
    book                  logged key (``prefix`` +)   meaning
    ====================  ==========================  ===========================================
    gᵀg                   ``gTg``                     squared gradient norm
    ‖g‖                   ``grad_norm``               gradient norm (the curve of Figure 8.1)
    gᵀHg                  ``gTHg``                    curvature along g, times ‖g‖²
    ½ε²gᵀHg − εgᵀg        ``predicted_change``        eq. 8.10 at ε = ``lr``
    ½ε·gᵀHg/gᵀg           ``ratio``                   > 1: the step is predicted to raise J
    λ_max                 ``top_eigenvalue``          dominant eigenvalue of H (optional)
    ====================  ==========================  ===========================================

    ε is the ``lr`` of the first optimizer's first param group. Values go to every logger of the
    Trainer with ``step=trainer.global_step`` (the index of the step about to be taken, so the first
    measurement is at step 0), and the latest ones are kept in :attr:`last_metrics`.

    **The loss contract.** The callback needs the loss as a function of the parameters on the
    current batch. With ``loss_fn=None`` it calls ``pl_module.training_step(batch, batch_idx)``
    again (taking ``out["loss"]`` when it returns a dict) in ``on_before_optimizer_step``, on the
    batch stashed in ``on_train_batch_start``, so it sees the parameters and the batch of the
    step about to be taken. That extra call must leave training unchanged, so the callback

    * computes gradients with ``torch.autograd.grad``: ``.grad`` of every parameter is untouched;
    * restores the ``torch`` (CPU and CUDA), ``random`` and ``numpy`` RNG states, every module's
      train/eval flag and every buffer (so BatchNorm running statistics are not updated twice);
    * discards the module's ``self.log`` and ``self.log_dict`` calls made during the extra call.

    Other side effects of ``training_step`` (counters, ``torchmetrics`` updates, writing to a
    logger's ``experiment`` directly) are not undone: give such modules a side-effect-free
    ``loss_fn(pl_module, batch) -> loss``. Manual optimization requires ``loss_fn``, since its
    ``training_step`` steps the optimizers itself. The loss is evaluated in the parameters' dtype,
    outside any autocast context.

    **Cost.** A measurement is one forward pass, a backward pass with ``create_graph=True`` and
    one Hessian-vector product: about four times a plain forward and backward on the batch. Each
    power iteration adds one Hessian-vector product (about two and a half times).

    Differences from the book:
        * The prediction is for the plain step −εg. With momentum or adaptive learning rates the
          step taken differs; ``ratio`` then still measures curvature against ε.
        * ``weight_decay`` applied by the optimizer is not part of g or H.
        * g and H are those of the minibatch loss on the current batch, not of the full cost J.

    Args:
        every_n_steps: measure when ``trainer.global_step % every_n_steps == 0``.
        top_eigenvalue: also log the dominant Hessian eigenvalue (largest in magnitude, with its
            sign) by power iteration, each iteration one Hessian-vector product.
        power_iterations: number of power iterations.
        warn_ratio: warn when ``ratio > warn_ratio``; ``None`` never warns. Warnings are rate
            limited: they fire at the 1st, 2nd, 4th, 8th, ... flagged measurement.
        loss_fn: ``loss_fn(pl_module, batch)`` returning the scalar training loss; default
            ``training_step`` (above).
        prefix: prepended to every logged key.
        seed: seed of the power iteration's start vector (drawn from a private generator).

    Example:
        >>> import lightning as L
        >>> import torch
        >>> from lightopt.callbacks.curvature_monitor import CurvatureMonitor
        >>> class Quadratic(L.LightningModule):  # J(θ) = ½θᵀAθ, H = A = diag(1, 4)
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.theta = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
        ...     def training_step(self, batch, batch_idx):
        ...         return 0.5 * (self.theta.square() * torch.tensor([1.0, 4.0])).sum()
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        >>> monitor = CurvatureMonitor(every_n_steps=1, top_eigenvalue=True)
        >>> trainer = L.Trainer(max_steps=1, callbacks=[monitor], logger=False, accelerator="cpu",
        ...                     enable_progress_bar=False, enable_model_summary=False,
        ...                     enable_checkpointing=False)
        >>> trainer.fit(Quadratic(), torch.utils.data.DataLoader([0.0]))
        >>> {k: round(v, 4) for k, v in monitor.last_metrics.items()}  # g = (1, 4)  # doctest: +NORMALIZE_WHITESPACE
        {'curvature/gTg': 17.0, 'curvature/grad_norm': 4.1231, 'curvature/gTHg': 65.0,
         'curvature/predicted_change': -1.375, 'curvature/ratio': 0.1912, 'curvature/top_eigenvalue': 4.0}
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        top_eigenvalue: bool = False,
        power_iterations: int = 20,
        warn_ratio: float | None = 1.0,
        loss_fn: LossFn | None = None,
        prefix: str = "curvature/",
        seed: int = 0,
    ) -> None:
        self.every_n_steps = check_int("every_n_steps", every_n_steps, low=1)
        self.top_eigenvalue = check_bool("top_eigenvalue", top_eigenvalue)
        self.power_iterations = check_int("power_iterations", power_iterations, low=1)
        self.warn_ratio = None if warn_ratio is None else check_number("warn_ratio", warn_ratio)
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be callable as loss_fn(pl_module, batch), but got loss_fn={loss_fn!r}.")
        self.loss_fn = loss_fn
        if not isinstance(prefix, str):
            raise TypeError(f"`prefix` must be a string, but got prefix={prefix!r} ({type(prefix).__name__}).")
        self.prefix = prefix
        self.seed = check_int("seed", seed, low=0)
        self.last_metrics: dict[str, float] = {}
        self._flagged = 0
        self._batch: Any = None
        self._batch_idx = 0
        self._measured_step: int | None = None

    @property
    @override
    def state_key(self) -> str:
        return f"{type(self).__qualname__}{{'every_n_steps': {self.every_n_steps}, 'prefix': {self.prefix!r}}}"

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"flagged": self._flagged}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._flagged = state_dict.get("flagged", 0)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.loss_fn is None and not pl_module.automatic_optimization:
            raise ValueError(
                "CurvatureMonitor cannot re-run `training_step` under manual optimization, since it steps "
                "the optimizers itself; pass `loss_fn=lambda module, batch: <loss>` instead."
            )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measured_step = None

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch, self._batch_idx = batch, batch_idx

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batch = None  # do not keep the batch alive between steps

    @override
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        step = trainer.global_step
        if step % self.every_n_steps or step == self._measured_step or self._batch is None:
            return
        self._measured_step = step  # once per step, even with several optimizers
        metrics = self.measure(pl_module, self._batch, self._batch_idx, _first_lr(trainer))
        if metrics is None:
            return
        self.last_metrics = metrics
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        self._maybe_warn(metrics[self.prefix + "ratio"], metrics[self.prefix + "gTHg"], step)

    def measure(self, pl_module: pl.LightningModule, batch: Any, batch_idx: int, lr: float) -> dict[str, float] | None:
        """Compute the logged values on ``batch`` at the current parameters, leaving no trace.

        Returns ``None`` when the loss is ``None`` (the module skipped the batch).
        """
        params = [p for p in pl_module.parameters() if p.requires_grad]
        if not params:
            return None
        with _untouched(pl_module), torch.enable_grad():
            loss = self._loss(pl_module, batch, batch_idx)
            if loss is None:
                return None
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TypeError(
                    f"CurvatureMonitor needs a scalar tensor loss, but got {type(loss).__name__}"
                    f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}; "
                    "return one from training_step or pass `loss_fn`."
                )
            grads = torch.autograd.grad(loss.reshape(()), params, create_graph=True, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            g = [t.detach() for t in grads]
            gTg = _dot(g, g)
            hvp = _HessianVectorProduct(grads, params)
            gTHg = _dot(g, hvp(g))
            values = {"gTg": gTg, "grad_norm": math.sqrt(gTg), "gTHg": gTHg}
            values["predicted_change"] = 0.5 * lr**2 * gTHg - lr * gTg  # eq. 8.10
            values["ratio"] = 0.5 * lr * gTHg / gTg if gTg > 0 else math.nan
            if self.top_eigenvalue:
                values["top_eigenvalue"] = self._power_iteration(hvp, params)
        return {self.prefix + k: float(v) for k, v in values.items()}

    def _loss(self, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if self.loss_fn is not None:
            return self.loss_fn(pl_module, batch)
        out = pl_module.training_step(batch, batch_idx)
        if isinstance(out, dict):
            if "loss" not in out:
                raise ValueError(
                    f"`training_step` returned a dict without a 'loss' key (keys: {sorted(out)}); "
                    "CurvatureMonitor needs the loss, so return it under 'loss' or pass `loss_fn`."
                )
            out = out["loss"]
        return out

    def _power_iteration(self, hvp: _HessianVectorProduct, params: list[torch.Tensor]) -> float:
        generator = torch.Generator().manual_seed(self.seed)
        v = [torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p) for p in params]
        eigenvalue = math.nan
        for _ in range(self.power_iterations):
            norm = math.sqrt(_dot(v, v))
            if norm == 0.0 or not math.isfinite(norm):
                return 0.0 if norm == 0.0 else math.nan  # H v = 0: v lies in the null space of H
            v = [t / norm for t in v]
            hv = hvp(v)
            eigenvalue = _dot(v, hv)  # Rayleigh quotient vᵀHv with ‖v‖ = 1
            v = hv
        return eigenvalue

    def _maybe_warn(self, ratio: float, gTHg: float, step: int) -> None:
        if self.warn_ratio is None or not ratio > self.warn_ratio:
            return
        self._flagged += 1
        if self._flagged & (self._flagged - 1) == 0:  # 1st, 2nd, 4th, 8th, ...
            rank_zero_warn(
                f"CurvatureMonitor: at step {step} the curvature term dominates eq. 8.10: "
                f"½ε·gᵀHg/gᵀg = {ratio:.3g} > warn_ratio={self.warn_ratio:g} (gᵀHg = {gTHg:.3g}), so a "
                f"gradient step is predicted to increase the cost ({self._flagged} such measurements so "
                "far). Consider a smaller learning rate.",
                category=UserWarning,
            )


class _HessianVectorProduct:
    """v ↦ Hv by differentiating gᵀv, where ``grads`` = g was built with ``create_graph=True``."""

    def __init__(self, grads: list[torch.Tensor], params: list[torch.Tensor]) -> None:
        self.grads = grads
        self.params = params
        self.live = [i for i, g in enumerate(grads) if g.requires_grad]  # the others are constant in θ

    def __call__(self, v: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.live:
            return [torch.zeros_like(p) for p in self.params]
        gTv = sum((self.grads[i] * v[i]).sum() for i in self.live)
        try:
            hv = torch.autograd.grad(gTv, self.params, retain_graph=True, allow_unused=True)
        except RuntimeError as error:
            raise ValueError(
                "CurvatureMonitor needs a loss that is twice differentiable (a double backward), but "
                f"differentiating its gradient failed: {error}"
            ) from error
        return [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(self.params, hv)]


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Σ_i ⟨a_i, b_i⟩, accumulated in float64."""
    device = a[0].device
    return torch.stack([(x * y).sum(dtype=torch.float64).to(device) for x, y in zip(a, b)]).sum().item()


def _first_lr(trainer: pl.Trainer) -> float:
    if not trainer.optimizers:
        raise ValueError("CurvatureMonitor needs an optimizer to read ε from; return one from `configure_optimizers`.")
    return float(trainer.optimizers[0].param_groups[0]["lr"])


def _discard_log(*args: Any, **kwargs: Any) -> None:
    return None


@contextmanager
def _untouched(pl_module: pl.LightningModule) -> Iterator[None]:
    """Undo what an extra ``training_step`` call may change: RNG, train/eval flags, buffers, logs."""
    modes = [(m, m.training) for m in pl_module.modules()]
    buffers = [(name, b, b.detach().clone()) for name, b in pl_module.named_buffers()]
    shadowed = {name: pl_module.__dict__[name] for name in ("log", "log_dict") if name in pl_module.__dict__}
    py_state = random.getstate()
    np_random = _numpy_random()
    np_state = np_random.get_state() if np_random is not None else None
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            pl_module.log = _discard_log  # an instance attribute shadows LightningModule.log
            pl_module.log_dict = _discard_log
            yield
    finally:
        for name in ("log", "log_dict"):
            if name in shadowed:
                pl_module.__dict__[name] = shadowed[name]
            else:
                pl_module.__dict__.pop(name, None)
        with torch.no_grad():
            for name, buffer, saved in buffers:
                buffer.copy_(saved)
                owner, _, leaf = name.rpartition(".")
                owner = pl_module.get_submodule(owner)
                if getattr(owner, leaf) is not buffer:  # reassigned rather than updated in place
                    setattr(owner, leaf, buffer)
        for module, training in modes:
            module.training = training
        random.setstate(py_state)
        if np_random is not None:
            np_random.set_state(np_state)


def _numpy_random() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is optional for lightopt
        return None
    return numpy.random
