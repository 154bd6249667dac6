"""AdaGrad: Algorithm 8.4 (§8.5.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lightopt._validation import check_bool, check_range
from lightopt.optim import _common, _finite

__all__ = ["AdaGrad"]


class AdaGrad(_finite.FirstOrderChecks, torch.optim.Adagrad):
    r"""AdaGrad, Algorithm 8.4 (§8.5.1).

    .. math::
        \begin{aligned}
        &\textbf{require: } \epsilon,\ \theta,\ \delta \approx 10^{-7};\quad r = 0 \\
        &\textbf{loop} \\
        &\quad g \leftarrow \tfrac{1}{m} \nabla_\theta \textstyle\sum_i L(f(x^{(i)}; \theta), y^{(i)}) \\
        &\quad r \leftarrow r + g \odot g \\
        &\quad \Delta\theta \leftarrow -\frac{\epsilon}{\delta + \sqrt{r}} \odot g \\
        &\quad \theta \leftarrow \theta + \Delta\theta
        \end{aligned}

    ======  ==========  ====================================
    book    argument    meaning
    ======  ==========  ====================================
    ε       ``lr``      global learning rate
    δ       ``eps``     small constant, outside the root
    r       (state)     ``sum`` of squared gradients
    ======  ==========  ====================================

    The book's update is ``torch.optim.Adagrad``'s with ``lr_decay=0``, ``weight_decay=0``,
    ``initial_accumulator_value=0`` and ``eps=δ``, so this class runs torch's kernels (for-loop,
    foreach and fused) unchanged.

    Differences from the book:
        * ``weight_decay`` (not in the book) adds ``λθ`` to g.
        * ``initial_accumulator_value`` starts r at a value r₀ >= 0 (the book: r = 0).
        * ``maximize=True`` ascends: g is replaced by −g.
        * The book gives no default ε; 0.01 is torch's.

    Differences from ``torch.optim.Adagrad``:
        * Default ``eps`` is the book's 1e-7, not 1e-10.
        * No ``lr_decay``: it is a learning-rate schedule, ε_k = ε/(1 + k·lr_decay), and the book
          keeps schedules apart from the algorithm; ``torch.optim.lr_scheduler.LambdaLR(opt,
          lambda k: 1 / (1 + k * lr_decay))`` stepped every optimizer step gives torch's exactly.
          No ``differentiable`` or tensor ``lr``; errors say so.
        * Default kernel path: torch's fused kernel on CPU floating-point parameters (agrees with
          the for-loop to rounding; torch defaults to the loop, about 3× slower), foreach on CUDA
          (torch has no fused CUDA Adagrad) and on complex parameters, the for-loop when a gradient
          is sparse (supported, as in torch); an explicit ``foreach``/``fused`` wins.
        * A state dict saved by ``torch.optim.Adagrad`` loads (same format) unless it has
          ``lr_decay`` != 0.
        * NaN/inf checks: see ``check_finite_every`` and :class:`~lightopt.optim.SGD`.

    Args:
        params: parameters or param groups.
        lr: ε >= 0.
        eps: δ > 0.
        weight_decay: λ >= 0.
        initial_accumulator_value: r₀ >= 0.
        maximize: ascend the objective.
        lr_decay, differentiable: torch.optim's arguments; only 0 and False are accepted.
        foreach: use foreach kernels (default: the fastest path, above).
        fused: use torch's fused kernel (CPU; default above).
        check_finite_every: as in :class:`~lightopt.optim.SGD`.

    Example:
        >>> import torch
        >>> from lightopt.optim import AdaGrad
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = AdaGrad([w], lr=0.1)
        >>> (w ** 2).sum().backward()
        >>> _ = opt.step()
        >>> w.detach()  # first step: -ε·g/|g|
        tensor([ 0.9000, -1.9000])
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        eps: float = 1e-7,
        *,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        maximize: bool = False,
        lr_decay: float = 0.0,
        differentiable: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        check_finite_every: int = _finite.DEFAULT_EVERY,
    ) -> None:
        _check_group(
            dict(
                lr=lr,
                eps=eps,
                weight_decay=weight_decay,
                initial_accumulator_value=initial_accumulator_value,
                maximize=maximize,
                lr_decay=lr_decay,
                differentiable=differentiable,
                foreach=foreach,
                fused=fused,
            )
        )
        self.check_finite_every = _finite.check_every(check_finite_every)
        self._paths = _common.PathChooser(_FUSED_DEVICES)
        super().__init__(
            params,
            lr=lr,
            lr_decay=0.0,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            foreach=foreach,
            maximize=maximize,
            fused=fused,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Also checks the param groups of a state dict saved by ``torch.optim.Adagrad``."""
        super().__setstate__(state)
        _common.restore_checked(self, _FUSED_DEVICES, _check_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one update (Algorithm 8.4); ``closure`` re-evaluates the loss."""
        loss = _common.evaluate_closure(closure)
        self._count_step(loss)
        has_sparse = [any(p.grad is not None and p.grad.is_sparse for p in g["params"]) for g in self.param_groups]
        _common.run_with_paths(self, self._paths, _TORCH_STEP, has_sparse)
        self._after_update()
        return loss


# torch has a fused Adagrad on the CPU only.
_FUSED_DEVICES = ("cpu",)
_TORCH_STEP = _common.unhooked_step(torch.optim.Adagrad)


def _check_group(group: dict[str, Any]) -> None:
    _common.check_lr(group["lr"])
    _common.check_eps(group["eps"])
    _common.check_weight_decay(group["weight_decay"])
    check_range("initial_accumulator_value", group.get("initial_accumulator_value", 0.0), 0.0)
    check_bool("maximize", group.get("maximize", False))
    _common.check_paths(group)
    _common.check_refused(
        "AdaGrad (Algorithm 8.4)",
        group,
        "lr_decay",
        0,
        "lr_decay is a learning-rate schedule: use torch.optim.lr_scheduler.LambdaLR(optimizer, "
        "lambda k: 1 / (1 + k * lr_decay)), stepped every optimizer step, which gives torch's decay exactly.",
    )
    _common.check_refused("AdaGrad", group, "differentiable", False, _common.DIFFERENTIABLE_ADVICE)
