"""AdaGrad: Algorithm 8.4 (§8.5.1)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from lightopt.optim import _common


class AdaGrad(torch.optim.Adagrad):
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
    foreach and fused) unchanged and only sets the book's defaults.

    Differences from the book:
        * ``weight_decay`` (not in the book) adds ``λθ`` to g.
        * The book gives no default ε; 0.01 is torch's.

    Differences from ``torch.optim.Adagrad``:
        * Default ``eps`` is the book's 1e-7, not 1e-10.
        * No ``lr_decay`` or ``initial_accumulator_value`` (both fixed at 0, as in the book).

    Args:
        params: parameters or param groups.
        lr: ε >= 0.
        eps: δ > 0.
        weight_decay: λ >= 0.
        foreach: use foreach kernels (default: torch's choice).
        fused: use torch's fused kernel (CPU).

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
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        lr = _common.check_lr(lr)
        eps = _common.check_eps(eps)
        weight_decay = _common.check_weight_decay(weight_decay)
        super().__init__(
            params, lr=lr, lr_decay=0.0, weight_decay=weight_decay, initial_accumulator_value=0.0, eps=eps,
            foreach=foreach, fused=fused,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for key in ("lr_decay", "initial_accumulator_value"):
            if param_group.get(key, 0) != 0:
                raise ValueError(
                    f"AdaGrad (Algorithm 8.4) has no `{key}`, but got {key}={param_group[key]!r}; "
                    f"use torch.optim.Adagrad for it."
                )
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _common.check_lr(group["lr"])
        _common.check_eps(group["eps"])
        _common.check_weight_decay(group["weight_decay"])
