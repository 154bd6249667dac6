"""Adam: Algorithm 8.7 (§8.5.3)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from lightopt.optim import _common


class Adam(torch.optim.Adam):
    r"""Adam, Algorithm 8.7 (§8.5.3).

    .. math::
        \begin{aligned}
        &\textbf{require: } \epsilon = 0.001,\ \rho_1 = 0.9,\ \rho_2 = 0.999,\ \delta = 10^{-8},
            \ \theta;\quad s = 0,\ r = 0,\ t = 0 \\
        &\textbf{loop} \\
        &\quad g \leftarrow \tfrac{1}{m} \nabla_\theta \textstyle\sum_i L(f(x^{(i)}; \theta), y^{(i)});
            \quad t \leftarrow t + 1 \\
        &\quad s \leftarrow \rho_1 s + (1 - \rho_1) g; \quad r \leftarrow \rho_2 r + (1 - \rho_2) g \odot g \\
        &\quad \hat s \leftarrow \frac{s}{1 - \rho_1^t}; \quad \hat r \leftarrow \frac{r}{1 - \rho_2^t} \\
        &\quad \theta \leftarrow \theta - \epsilon \frac{\hat s}{\sqrt{\hat r} + \delta}
        \end{aligned}

    ==========  ==============  ==========================================
    book        argument        meaning
    ==========  ==============  ==========================================
    ε           ``lr``          step size
    ρ1, ρ2      ``betas``       decay rates of the moment estimates
    δ           ``eps``         small constant, added after bias correction
    s, r, t     (state)         ``exp_avg``, ``exp_avg_sq``, ``step``
    ==========  ==============  ==========================================

    ``torch.optim.Adam`` computes ``lr/(1 − ρ1^t) · s / (√r/√(1 − ρ2^t) + δ)``, which is the
    book's update term for term, with the same defaults; so this class runs torch's kernels
    (for-loop, foreach and fused) unchanged and only removes what the book does not have.

    Differences from the book:
        * ``weight_decay`` (not in the book) adds ``λθ`` to g (coupled L2, as torch's Adam; use
          ``torch.optim.AdamW`` for decoupled decay).

    Differences from ``torch.optim.Adam``:
        * No ``amsgrad``, ``maximize``, ``decoupled_weight_decay`` or ``differentiable``.
        * Kingma & Ba's "efficient" form (TensorFlow/Keras) adds its ε̂ before bias correction, so
          ε values from those libraries do not carry over.

    Args:
        params: parameters or param groups.
        lr: ε >= 0.
        betas: (ρ1, ρ2), each in [0, 1).
        eps: δ > 0.
        weight_decay: λ >= 0.
        foreach: use foreach kernels (default: torch's choice).
        fused: use torch's fused kernel.

    Example:
        >>> import torch
        >>> from lightopt.optim import Adam
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = Adam([w], lr=0.1)
        >>> (w ** 2).sum().backward()
        >>> _ = opt.step()
        >>> w.detach()  # first step: -ε·sign(g)
        tensor([ 0.9000, -1.9000])
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        *,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        lr = _common.check_lr(lr)
        betas = _check_betas(betas)
        eps = _common.check_eps(eps)
        weight_decay = _common.check_weight_decay(weight_decay)
        super().__init__(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=False,
            foreach=foreach, fused=fused,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if param_group.get("amsgrad", False):
            raise ValueError("Adam (Algorithm 8.7) has no `amsgrad`; use torch.optim.Adam(amsgrad=True) for it.")
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _common.check_lr(group["lr"])
        group["betas"] = _check_betas(group["betas"])
        _common.check_eps(group["eps"])
        _common.check_weight_decay(group["weight_decay"])


def _check_betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"`betas` must be a pair (rho1, rho2), but got betas={betas!r}.")
    return (_common.check_unit("betas[0]", betas[0]), _common.check_unit("betas[1]", betas[1]))
