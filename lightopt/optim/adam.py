"""Adam: Algorithm 8.7 (§8.5.3)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lightopt._validation import check_bool
from lightopt.optim import _common, _finite

__all__ = ["Adam"]


class Adam(_finite.FirstOrderChecks, torch.optim.Adam):
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
        * ``maximize=True`` ascends: g is replaced by −g.

    Differences from ``torch.optim.Adam``:
        * Default kernel path: torch's fused kernel on CPU and CUDA floating-point parameters (it
          agrees with the for-loop to rounding; torch defaults to the for-loop on the CPU, 3–4×
          slower), foreach on complex parameters and other devices; an explicit
          ``foreach``/``fused`` wins.
        * No ``amsgrad`` (AMSGrad is not Algorithm 8.7: use ``torch.optim.Adam(amsgrad=True)``),
          ``decoupled_weight_decay`` (use ``torch.optim.AdamW``), ``differentiable`` or tensor
          ``lr``; errors say so. A state dict saved by ``torch.optim.Adam`` loads (same format)
          unless it was saved with one of those.
        * Sparse gradients are a ``TypeError`` (torch raises a ``RuntimeError``); complex
          parameters are stepped as pairs of reals, as torch does.
        * NaN/inf checks: see ``check_finite_every`` and :class:`~lightopt.optim.SGD`.
        * Kingma & Ba's "efficient" form (TensorFlow/Keras) adds its ε̂ before bias correction, so
          ε values from those libraries do not carry over.

    Args:
        params: parameters or param groups.
        lr: ε >= 0.
        betas: (ρ1, ρ2), each in [0, 1).
        eps: δ > 0.
        weight_decay: λ >= 0.
        amsgrad, decoupled_weight_decay, differentiable: torch.optim's arguments; only False is accepted.
        maximize: ascend the objective.
        foreach: use foreach kernels (default: the fastest path, above).
        fused: use torch's fused kernel (default above).
        check_finite_every: as in :class:`~lightopt.optim.SGD`.

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
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        differentiable: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        check_finite_every: int = _finite.DEFAULT_EVERY,
    ) -> None:
        _check_group(
            dict(
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                amsgrad=amsgrad,
                maximize=maximize,
                decoupled_weight_decay=decoupled_weight_decay,
                differentiable=differentiable,
            )
        )
        self.check_finite_every = _finite.check_every(check_finite_every)
        self._paths = _common.PathChooser(_common.FUSED_DEVICES)
        super().__init__(
            params,
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=False,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)
        self.param_groups[-1]["betas"] = tuple(self.param_groups[-1]["betas"])

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Also checks the param groups of a state dict saved by ``torch.optim.Adam``."""
        super().__setstate__(state)
        _common.restore_checked(self, _common.FUSED_DEVICES, _check_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one update (Algorithm 8.7); ``closure`` re-evaluates the loss."""
        loss = _common.evaluate_closure(closure)
        self._count_step(loss)
        try:
            _common.run_with_paths(self, self._paths, _TORCH_STEP, [False] * len(self.param_groups))
        except RuntimeError as error:  # torch's check, before it changes the group: one error in the house form
            if "sparse" in str(error):
                raise _common.sparse_gradient_error("Adam") from error
            raise
        self._after_update()
        return loss


_TORCH_STEP = _common.unhooked_step(torch.optim.Adam)


def _check_group(group: dict[str, Any]) -> None:
    _common.check_lr(group["lr"])
    _check_betas(group["betas"])
    _common.check_eps(group["eps"])
    _common.check_weight_decay(group["weight_decay"])
    check_bool("maximize", group.get("maximize", False))
    _common.check_paths(group)
    _common.check_refused(
        "Adam (Algorithm 8.7)",
        group,
        "amsgrad",
        False,
        "AMSGrad keeps the maximum of r; use torch.optim.Adam(amsgrad=True).",
    )
    _common.check_refused(
        "Adam (Algorithm 8.7)",
        group,
        "decoupled_weight_decay",
        False,
        "For decoupled weight decay use torch.optim.AdamW.",
    )
    _common.check_refused("Adam", group, "differentiable", False, _common.DIFFERENTIABLE_ADVICE)


def _check_betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"`betas` must be a pair (rho1, rho2), but got betas={betas!r}.")
    return (_common.check_unit("betas[0]", betas[0]), _common.check_unit("betas[1]", betas[1]))
