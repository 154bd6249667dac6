"""Gradient clipping, the book's remedy for cliffs (§8.2.4, §10.11.1, eqs. 10.48-10.49)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightopt._validation import check_bool, check_choice, check_int, check_range

__all__ = ["GradientClipping", "clip_by_norm_", "clip_by_value_", "random_step_", "total_norm"]

_ALGORITHMS = ("norm", "value")
_ON_NONFINITE = ("random_step", "raise")


def total_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """‖g‖, the Euclidean norm of ``tensors`` viewed as one vector (0-dim tensor; float32 or wider)."""
    if not tensors:
        return torch.tensor(0.0)
    norms = [torch.linalg.vector_norm(t, dtype=_accumulate_dtype(t)) for t in tensors]
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))


def clip_by_norm_(tensors: Sequence[torch.Tensor], max_norm: float) -> tuple[float, bool]:
    r"""Eqs. 10.48-10.49 in place: if ‖g‖ > v then g ← g·v/‖g‖, one scale for all ``tensors``.

    Returns ``(‖g‖ before clipping, whether it clipped)``. A non-finite ‖g‖ is left alone (the
    caller decides: see :func:`random_step_`). Unlike ``torch.nn.utils.clip_grad_norm_``
    (factor ``v/(‖g‖ + 1e-6)``), the clipped norm is v up to rounding: g = (6, 8), v = 1 gives
    exactly (0.6, 0.8).

    >>> g = [torch.tensor([6.0]), torch.tensor([8.0])]
    >>> clip_by_norm_(g, 1.0), g
    ((10.0, True), [tensor([0.6000]), tensor([0.8000])])
    """
    norm = total_norm(tensors)
    value = norm.item()
    if not math.isfinite(value) or value <= max_norm:
        return value, False
    for t in tensors:
        t.div_(value / max_norm)  # g·v/‖g‖ as one division: exact when ‖g‖/v is
    return value, True


def clip_by_value_(tensors: Sequence[torch.Tensor], clip_value: float) -> bool:
    """Element-wise clipping (Mikolov) in place: each entry clamped to [-v, v]. Returns whether any was.

    >>> g = [torch.tensor([6.0, -0.5])]
    >>> clip_by_value_(g, 1.0), g
    (True, [tensor([ 1.0000, -0.5000])])
    """
    largest = [torch.linalg.vector_norm(t, ord=math.inf, dtype=_accumulate_dtype(t)) for t in tensors if t.numel()]
    if not largest:
        return False
    clipped = torch.stack([m.to(largest[0].device) for m in largest]).max().item() > clip_value
    for t in tensors:
        t.clamp_(-clip_value, clip_value)
    return clipped


def random_step_(tensors: Sequence[torch.Tensor], size: float, generator: torch.Generator) -> None:
    """Overwrite ``tensors`` in place with a random direction of norm ``size`` ("a random step of size v").

    Entries are drawn i.i.d. N(0, 1) in float64 on the CPU from ``generator`` (so the direction
    does not depend on the device) and the whole set is scaled jointly to norm ``size``.

    >>> g = [torch.full((2,), float("nan")), torch.zeros(3)]
    >>> random_step_(g, 0.5, torch.Generator().manual_seed(0))
    >>> round(total_norm(g).item(), 6)
    0.5
    """
    draws = [torch.randn(t.shape, generator=generator, dtype=torch.float64) for t in tensors]
    scale = size / math.sqrt(sum(float(d.square().sum()) for d in draws))
    for t, d in zip(tensors, draws):
        t.copy_(d.mul_(scale))


class GradientClipping(Callback):
    r"""Gradient clipping against cliffs and exploding gradients, §8.2.4 and §10.11.1.

    .. math::
        \begin{aligned}
        &\text{norm (10.48-10.49):} && \textbf{if } \lVert g \rVert > v:\ g \leftarrow g\,v / \lVert g \rVert
            \quad\text{(one } \lVert g \rVert \text{ over all parameters)} \\
        &\text{value (Mikolov):} && g_i \leftarrow \max(-v, \min(v, g_i)) \\
        &\text{non-finite } g: && g \leftarrow v\,u / \lVert u \rVert,\quad u \sim \mathcal{N}(0, I)
            \quad\text{("a random step of size } v \text{")}
        \end{aligned}

    ========  ====================  ===========================================
    book      argument              meaning
    ========  ====================  ===========================================
    v         ``clip_val``          norm threshold, or element bound ("value")
    g         (the gradients)       all gradients of the optimizer, jointly
    ========  ====================  ===========================================

    The callback acts in ``on_before_optimizer_step`` on the parameters of the optimizer about
    to step. On the steps where Lightning writes to the logger (every
    ``Trainer(log_every_n_steps=n)`` steps) it logs ``grad_clip/norm``, ‖g‖ before clipping at
    that step, and ``grad_clip/clipped`` and ``grad_clip/random_steps``, the number of steps
    clipped and replaced by a random step since the previous write (``num_clipped`` and
    ``num_random_steps`` count them over the fit). Logging on the other steps would be
    overwritten before it was written, and ``LightningModule.log`` costs far more than the
    clipping itself.

    **The random step.** When ‖g‖ is Inf or NaN, the gradients are replaced by a random
    direction of norm v drawn from a generator seeded with ``seed`` (its state is checkpointed,
    so a resumed run draws what an uninterrupted one would). The optimizer then steps with it as
    with any gradient: plain SGD moves the parameters by ε·v, and momentum or Adam state absorbs
    it. Parameters without a gradient are left alone. ``on_nonfinite="raise"`` raises a
    ``ValueError`` naming the parameters instead.

    **Hook order and mixed precision.** Lightning runs the closure (forward, backward), then
    under 16-bit AMP unscales the gradients (``MixedPrecision.optimizer_step`` calls
    ``scaler.unscale_`` before ``on_before_optimizer_step``), then calls the callbacks'
    ``on_before_optimizer_step`` in list order, the LightningModule's, and finally its own
    clipping (``configure_gradient_clipping``). So this callback sees true, unscaled gradients,
    except with optimizers that unscale inside ``step`` (fused ones), which Lightning also
    refuses to clip. Under a ``GradScaler`` a non-finite gradient is an overflow of the loss
    scale: the scaler already skips that step and lowers the scale, so no random step is taken
    (the step counts as neither clipped nor random). With ``bf16-mixed`` (no scaler) the
    random step applies. Gradients are all-reduced before the hook under DDP, and every rank
    draws the same random step; sharded gradients (FSDP) are not supported.

    **Relation to Lightning's clipping.** ``Trainer(gradient_clip_val=v,
    gradient_clip_algorithm="norm")`` calls ``torch.nn.utils.clip_grad_norm_``, which multiplies
    by min(1, v/(‖g‖ + 1e-6)), so a clipped gradient has norm slightly below v (0.9999999 for
    g = (6, 8), v = 1), and lets NaN/Inf through. Both clip the same gradients, after each
    other: use one or the other. Setting both raises in ``on_fit_start``. Unlike
    ``gradient_clip_val``, the callback also works under manual optimization, where Lightning
    calls ``on_before_optimizer_step`` from ``optimizer.step()``.

    Differences from the book:
        * The random step replaces the gradient, so its length in parameter space is set by the
          optimizer (ε·v for SGD), as for a clipped gradient.
        * Element-wise clipping also takes the random step (of norm v) on non-finite gradients.

    Args:
        clip_val: v > 0.
        algorithm: ``"norm"`` (the book's eq. 10.48-10.49, default) or ``"value"``.
        on_nonfinite: ``"random_step"`` (default) or ``"raise"``.
        seed: seed of the random-step generator (integer >= 0).
        log: log the three metrics above through ``pl_module.log_dict``.

    **Cost.** One norm per parameter tensor and one host synchronisation per step (to branch on
    ‖g‖), and one division per tensor on clipped steps.

    Example:
        >>> import lightning as L, torch
        >>> from lightopt.callbacks.gradient_clipping import GradientClipping
        >>> class Cliff(L.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        ...     def training_step(self, batch, batch_idx):
        ...         return 0.5 * (self.w ** 2).sum()  # g = w, ‖g‖ = 5
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=1.0)
        >>> model = Cliff()
        >>> trainer = L.Trainer(max_steps=1, callbacks=[GradientClipping(clip_val=1.0)], logger=False,
        ...     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.fit(model, torch.utils.data.DataLoader(torch.zeros(1, 1)))
        >>> model.w.detach()  # w − (0.6, 0.8)
        tensor([2.4000, 3.2000])
    """

    def __init__(
        self,
        clip_val: float,
        algorithm: str = "norm",
        *,
        on_nonfinite: str = "random_step",
        seed: int = 0,
        log: bool = True,
    ) -> None:
        self.clip_val = check_range("clip_val", clip_val, 0.0, low_inclusive=False)
        if math.isinf(self.clip_val):
            raise ValueError(f"`clip_val` must be finite, but got clip_val={clip_val!r}.")
        self.algorithm = check_choice("algorithm", algorithm, _ALGORITHMS)
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, _ON_NONFINITE)
        self.seed = check_int("seed", seed, 0)
        self.log = check_bool("log", log)
        self._generator = torch.Generator().manual_seed(self.seed)
        self._names: dict[int, str] = {}
        self.num_clipped = 0
        self.num_random_steps = 0
        self._since_log = [0, 0]  # clipped, random steps since the last write
        self._state_key = self._generate_state_key(clip_val=self.clip_val, algorithm=self.algorithm)

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.gradient_clip_val:
            raise ValueError(
                f"GradientClipping(clip_val={self.clip_val}) and Trainer(gradient_clip_val="
                f"{trainer.gradient_clip_val}) would both clip the gradients; use one: remove "
                "`gradient_clip_val` from the Trainer or the callback from `callbacks`."
            )
        self._names = {id(p): name for name, p in pl_module.named_parameters()}

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        clipped = random = False
        if self.algorithm == "norm":
            norm, clipped = clip_by_norm_(grads, self.clip_val)
        else:
            norm = total_norm(grads).item()
            if math.isfinite(norm):
                clipped = clip_by_value_(grads, self.clip_val)
        if not math.isfinite(norm) and getattr(trainer.precision_plugin, "scaler", None) is None:
            if self.on_nonfinite == "raise":
                bad = [self._names.get(id(p), "<unnamed>") for p in params if not torch.isfinite(p.grad).all()]
                raise ValueError(
                    f"Non-finite gradient at step {trainer.global_step} in {', '.join(bad)} "
                    f"(‖g‖ = {norm}). Use on_nonfinite='random_step' to take the book's random step."
                )
            random_step_(grads, self.clip_val, self._generator)
            random = True
        self.num_clipped += clipped
        self.num_random_steps += random
        self._since_log[0] += clipped
        self._since_log[1] += random
        every = trainer.log_every_n_steps
        if self.log and every and (trainer.global_step + 1) % every == 0:
            clipped_steps, random_steps = self._since_log
            self._since_log = [0, 0]
            metrics = {
                "grad_clip/norm": norm,
                "grad_clip/clipped": clipped_steps,
                "grad_clip/random_steps": random_steps,
            }
            pl_module.log_dict({k: float(v) for k, v in metrics.items()}, on_step=True, on_epoch=False)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "generator_state": self._generator.get_state(),
            "num_clipped": self.num_clipped,
            "num_random_steps": self.num_random_steps,
            "since_log": list(self._since_log),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "generator_state" in state_dict:
            self._generator.set_state(state_dict["generator_state"])
        self.num_clipped = state_dict.get("num_clipped", 0)
        self.num_random_steps = state_dict.get("num_random_steps", 0)
        self._since_log = list(state_dict.get("since_log", [0, 0]))


def _accumulate_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32
