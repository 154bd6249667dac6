"""Nonlinear conjugate gradients: Algorithm 8.9 (§8.6.2)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lightopt._validation import check_int, check_range
from lightopt.optim import _common
from lightopt.optim import _second_order as _so

__all__ = ["BETAS", "ConjugateGradient"]

BETAS = ("polak_ribiere", "fletcher_reeves")
_HYPERPARAMETERS = ("lr", "beta", "restart_every", "line_search", "max_iter", "tolerance_grad", "c1", "c2")


class ConjugateGradient(_so.FlatOptimizer):
    r"""Nonlinear conjugate gradients, Algorithm 8.9 (§8.6.2).

    .. math::
        \begin{aligned}
        &\textbf{require: } \theta_0;\quad \rho_0 = 0,\ g_0 = 0,\ t = 1 \\
        &\textbf{loop} \\
        &\quad g_t \leftarrow \tfrac{1}{m} \nabla_\theta \textstyle\sum_i L(f(x^{(i)}; \theta), y^{(i)}) \\
        &\quad \beta_t = \frac{(g_t - g_{t-1})^\top g_t}{g_{t-1}^\top g_{t-1}}
            \ \text{(Polak–Ribière, 8.31)} \quad\text{or}\quad
            \beta_t = \frac{g_t^\top g_t}{g_{t-1}^\top g_{t-1}} \ \text{(Fletcher–Reeves, 8.30)} \\
        &\quad \beta_t = 0 \ \text{ if } t = 1 \text{ or a restart is due} \\
        &\quad \rho_t = -g_t + \beta_t \rho_{t-1} \\
        &\quad \epsilon^* \approx \operatorname{argmin}_\epsilon J(\theta_t + \epsilon \rho_t)
            \quad \text{(strong-Wolfe line search)} \\
        &\quad \theta_{t+1} = \theta_t + \epsilon^* \rho_t; \quad t \leftarrow t + 1
        \end{aligned}

    ==============  ===================  ======================================================
    book            argument             meaning
    ==============  ===================  ======================================================
    β_t             ``beta``             ``"polak_ribiere"`` (8.31) or ``"fletcher_reeves"`` (8.30)
    k (reset β)     ``restart_every``    β_t = 0 every k iterations; ``None``: never (but below)
    ε*              ``line_search``      ``"strong_wolfe"``, or ``None`` for the fixed ε = ``lr``
    ρ_t, g_{t−1}    (state)              ``prev_dir``, ``prev_grad``
    ==============  ===================  ======================================================

    One ``step(closure)`` runs ``max_iter`` iterations (default 1, so that one Lightning step is one
    iteration); ρ_{t−1}, g_{t−1} and t persist in the state across steps and through
    ``state_dict``. An iteration is skipped when ‖g_t‖_∞ <= ``tolerance_grad``.

    **Line search.** ``line_search="strong_wolfe"`` finds ε* with the sufficient-decrease
    constant ``c1`` and the curvature constant ``c2`` (0.1, the usual value for CG: CG needs
    more exact searches than quasi-Newton methods). The first search starts at the trial step
    ``lr``·min(1, 1/‖g‖₁), later ones at ε_{t−1}·g_{t−1}ᵀρ_{t−1} / g_tᵀρ_t (Nocedal & Wright,
    eq. 3.60). With an exact search a k-dimensional quadratic is minimized in at most k
    iterations; a strong-Wolfe search is inexact, so pass a small ``c2`` (e.g. 1e-6) to get close
    to that behaviour (and ``c1`` < ``c2``, e.g. ``c1=1e-10``). With ``line_search=None`` the step
    is the fixed ε = ``lr``.

    **Descent safeguards.** Polak–Ribière uses β⁺ = max(β_t, 0) (PR+), which restarts from
    steepest descent when β_t < 0 and makes the method globally convergent under the strong-Wolfe
    conditions. Whatever β, a direction that is not a descent direction (g_tᵀρ_t >= 0, possible
    with an inexact search or with FR) is replaced by −g_t, and ``state["restarts"]`` counts it.

    **Non-finite values.** Every iteration checks the loss and gradient, the direction and the
    new point, and raises :class:`~lightopt.optim.NonFiniteError` naming the iteration and the
    quantity, leaving the parameters at the last finite point (values read anyway: no extra cost).

    Differences from the book:
        * β_1 = 0: the first direction is steepest descent (the book's β_1 is 0/0, as g_0 = 0).
        * ρ_t = −g_t + β_tρ_{t−1}, as in the algorithm box (eq. 8.29 prints +∇J, a sign conflict).
        * Restarts happen at t = 1, k + 1, 2k + 1, … for ``restart_every=k``, so each cycle has k
          iterations; the book resets when t is a multiple of k.
        * PR+ and the descent restart above; ε* from an inexact line search.

    Differences from ``torch.optim``: torch has no nonlinear CG. All param groups are flattened
    into one vector, so every hyperparameter must be the same in every group.

    Args:
        params: parameters or param groups (all of one dtype and device).
        lr: ε >= 0: the fixed step without a line search, else the first trial step.
        beta: ``"polak_ribiere"`` or ``"fletcher_reeves"``.
        restart_every: k >= 1, or ``None``.
        line_search: ``"strong_wolfe"`` or ``None``.
        max_iter: iterations per ``step`` (>= 1).
        tolerance_grad: skip iterations once ‖g‖_∞ <= this (>= 0).
        c1: sufficient-decrease constant, in (0, 1).
        c2: curvature constant, in (c1, 1).

    Example:
        >>> import torch
        >>> from lightopt.optim import ConjugateGradient
        >>> a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> theta = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        >>> opt = ConjugateGradient([theta], max_iter=10)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = 0.5 * theta @ a @ theta - theta.sum()
        ...     loss.backward()
        ...     return loss
        >>> _ = opt.step(closure)
        >>> theta.detach().round(decimals=6)
        tensor([0.2000, 0.4000], dtype=torch.float64)
    """

    _shared = _HYPERPARAMETERS

    @staticmethod
    def _check_group(group: dict[str, Any]) -> None:
        _check_hyperparameters(group)

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        beta: str = "polak_ribiere",
        restart_every: int | None = None,
        line_search: str | None = "strong_wolfe",
        max_iter: int = 1,
        *,
        tolerance_grad: float = 1e-7,
        c1: float = 1e-4,
        c2: float = 0.1,
    ) -> None:
        defaults = dict(
            lr=lr,
            beta=beta,
            restart_every=restart_every,
            line_search=line_search,
            max_iter=max_iter,
            tolerance_grad=tolerance_grad,
            c1=c1,
            c2=c2,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Run ``max_iter`` CG iterations; ``closure`` computes the loss, calls backward() and returns it."""
        hp, params, state = self._begin(closure)
        orig_loss, f, g = _so.evaluate(closure, params)  # g_t ← (1/m)∇Σ L
        for i in range(hp["max_iter"]):
            _so.Guard("ConjugateGradient", state.get("n_iter", 0) + 1, _ADVICE).point(f, g)
            if float(g.abs().max()) <= hp["tolerance_grad"]:
                break
            t_index = state.get("n_iter", 0)  # t − 1
            restart = t_index == 0 or (hp["restart_every"] is not None and t_index % hp["restart_every"] == 0)
            if restart:
                rho = -g  # β_t = 0
            else:
                rho = -g + _beta(hp["beta"], g, state["prev_grad"]) * state["prev_dir"]  # ρ_t = −g_t + β_tρ_{t−1}
            gtd = torch.dot(g, rho)
            if not float(gtd) < 0.0:  # not a descent direction: restart from steepest descent
                rho, gtd = -g, -torch.dot(g, g)
                state["restarts"] = state.get("restarts", 0) + 1
            if hp["line_search"] is None:
                trial = hp["lr"]
            elif state.get("prev_step", 0.0) > 0.0:
                trial = state["prev_step"] * state["prev_gtd"] / float(gtd)  # Nocedal & Wright (3.60)
            else:
                trial = _so.first_trial_step(hp["lr"], g)
            x = _so.flat_params(params)
            # ε* by the line search; θ_{t+1} = θ_t + ε*ρ_t
            step, found = _so.advance(
                closure,
                params,
                x,
                rho,
                trial,
                f,
                g,
                gtd,
                hp["line_search"],
                c1=hp["c1"],
                c2=hp["c2"],
                guard=_so.Guard("ConjugateGradient", state.get("n_iter", 0) + 1, _ADVICE),
            )
            state.update(prev_grad=g, prev_dir=rho, prev_step=step, prev_gtd=float(gtd), n_iter=t_index + 1)
            if i + 1 < hp["max_iter"]:
                f, g = found if found is not None else _so.evaluate(closure, params)[1:]
        return orig_loss


def _beta(rule: str, g: torch.Tensor, g_prev: torch.Tensor) -> torch.Tensor:
    denominator = torch.dot(g_prev, g_prev)
    if float(denominator) == 0.0:
        return torch.zeros_like(denominator)
    if rule == "fletcher_reeves":
        return torch.dot(g, g) / denominator  # eq. 8.30
    return torch.clamp(torch.dot(g - g_prev, g) / denominator, min=0.0)  # eq. 8.31, PR+


_ADVICE = (
    "Lower `lr` or use line_search='strong_wolfe'; parameters are left at the last finite point. Find the operation "
    "that overflows with torch.autograd.set_detect_anomaly(True)."
)


def _check_hyperparameters(group: dict[str, Any]) -> None:
    _common.check_lr(group["lr"])
    _so.check_option("beta", group["beta"], BETAS)
    if group["restart_every"] is not None:
        check_int("restart_every", group["restart_every"], 1)
    _so.check_option("line_search", group["line_search"], _so.LINE_SEARCHES)
    check_int("max_iter", group["max_iter"], 1)
    check_range("tolerance_grad", group["tolerance_grad"], 0.0)
    c1 = check_range("c1", group["c1"], 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_range("c2", group["c2"], c1, 1.0, low_inclusive=False, high_inclusive=False)
