"""BFGS with a dense inverse-Hessian approximation (§8.6.3, eq. 8.33)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lightopt._validation import check_bool, check_int, check_range
from lightopt.optim import _common
from lightopt.optim import _second_order as _so

__all__ = ["BFGS", "bfgs_update_"]

_HYPERPARAMETERS = ("lr", "line_search", "max_iter", "tolerance_grad", "init_scale", "c1", "c2")


class BFGS(_so.FlatOptimizer):
    r"""The BFGS quasi-Newton method, §8.6.3 (eq. 8.33), with a dense inverse-Hessian approximation M.

    .. math::
        \begin{aligned}
        &\textbf{require: } \theta_0;\quad M_0 = I \\
        &\textbf{loop} \\
        &\quad g_t \leftarrow \tfrac{1}{m} \nabla_\theta \textstyle\sum_i L(f(x^{(i)}; \theta), y^{(i)}) \\
        &\quad s = \theta_t - \theta_{t-1}; \quad y = g_t - g_{t-1}; \quad \varrho = 1 / (y^\top s)
            \quad (t > 1, \text{ skipped unless } y^\top s > \sqrt{\epsilon_{\text{mach}}}\,\|y\|\,\|s\|) \\
        &\quad M_t = (I - \varrho s y^\top) M_{t-1} (I - \varrho y s^\top) + \varrho s s^\top \\
        &\quad \rho_t = -M_t g_t \\
        &\quad \epsilon^* \approx \operatorname{argmin}_\epsilon J(\theta_t + \epsilon \rho_t)
            \quad \text{(strong-Wolfe line search)} \\
        &\quad \theta_{t+1} = \theta_t + \epsilon^* \rho_t
        \end{aligned}

    ============  =================  ========================================================
    book          argument           meaning
    ============  =================  ========================================================
    M_t           (state)            ``inverse_hessian``, the approximation of H⁻¹
    ε*            ``line_search``    ``"strong_wolfe"``, or ``None`` for the fixed ε = ``lr``
    —             ``init_scale``     M ← (yᵀs / yᵀy)·I before the first update
    ============  =================  ========================================================

    One ``step(closure)`` runs ``max_iter`` iterations (default 1: one Lightning step is one
    iteration). The pair (s, y) is formed at the start of the next iteration, so the update also
    spans ``step`` calls and works without a line search; M, θ_{t−1} and g_{t−1} are kept in the
    state and round-trip through ``state_dict``. An iteration is skipped when ‖g_t‖_∞ <=
    ``tolerance_grad``.

    **Curvature condition.** The update keeps M positive definite only when yᵀs > 0; a
    strong-Wolfe step guarantees it, a fixed step does not. The update is skipped when
    yᵀs <= √ε_mach·‖y‖‖s‖, and ``state["skipped_updates"]`` counts it. If rounding still makes
    −Mg an ascent direction, M is reset to I (``state["resets"]``).

    **Line search.** Strong Wolfe with ``c1`` and ``c2`` (0.9, the usual quasi-Newton value). The
    trial step is ``lr``; before the first update (M = I) it is ``lr``·min(1, 1/‖g‖₁).

    **Memory.** M is a dense n × n matrix (n = number of parameters over all groups): O(n²)
    memory and time per iteration, 128 MiB in float64 at n = 4096, the default ``max_params``.
    Larger models raise a ``ValueError``; raise ``max_params`` deliberately, or use
    :class:`~lightopt.optim.LBFGS`, which keeps O(n) memory.

    **Non-finite values.** Every iteration checks the loss and gradient, the direction and the
    new point, and raises :class:`~lightopt.optim.NonFiniteError` naming the iteration and the
    quantity, leaving the parameters at the last finite point (values read anyway: no extra cost).

    Differences from the book:
        * ρ_t = −M_t g_t: the book prints ρ_t = M_t g_t (eq. 8.33), which climbs.
        * The inverse update itself is deferred by the book to Luenberger (1984); this is the
          standard BFGS inverse update above.
        * ``init_scale=True`` (default) scales M_0 = I by yᵀs/yᵀy before the first update
          (Nocedal & Wright, eq. 6.20); ``init_scale=False`` keeps M_0 = I.

    Differences from ``torch.optim``: torch has only L-BFGS. All param groups are flattened into
    one vector, so every hyperparameter must be the same in every group.

    Args:
        params: parameters or param groups (all of one dtype and device).
        lr: ε >= 0: the fixed step without a line search, else the trial step.
        line_search: ``"strong_wolfe"`` or ``None``.
        max_iter: iterations per ``step`` (>= 1).
        tolerance_grad: skip iterations once ‖g‖_∞ <= this (>= 0).
        init_scale: scale M_0 by yᵀs/yᵀy before the first update.
        max_params: the largest n accepted (>= 1).
        c1: sufficient-decrease constant, in (0, 1).
        c2: curvature constant, in (c1, 1).

    Example:
        >>> import torch
        >>> from lightopt.optim import BFGS
        >>> a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> theta = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        >>> opt = BFGS([theta], max_iter=10)
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
        line_search: str | None = "strong_wolfe",
        max_iter: int = 1,
        *,
        tolerance_grad: float = 1e-7,
        init_scale: bool = True,
        max_params: int = 4096,
        c1: float = 1e-4,
        c2: float = 0.9,
    ) -> None:
        defaults = dict(
            lr=lr,
            line_search=line_search,
            max_iter=max_iter,
            tolerance_grad=tolerance_grad,
            init_scale=init_scale,
            c1=c1,
            c2=c2,
        )
        self.max_params = check_int("max_params", max_params, 1)
        super().__init__(params, defaults)
        self._check_size(_so.all_params(self))

    def _check_size(self, params: list[torch.Tensor]) -> None:
        n = sum(p.numel() for p in params)
        if n > self.max_params:
            raise ValueError(
                f"BFGS stores a dense n x n inverse-Hessian approximation, so the number of parameters n must be <= "
                f"max_params={self.max_params}, but got n={n}. Pass a larger `max_params` if {n}^2 entries fit in "
                "memory, or use lightopt.optim.LBFGS (O(n) memory)."
            )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Run ``max_iter`` BFGS iterations; ``closure`` computes the loss, calls backward() and returns it."""
        hp, params, state = self._begin(closure)
        self._check_size(params)
        orig_loss, f, g = _so.evaluate(closure, params)  # g_t ← (1/m)∇Σ L
        for i in range(hp["max_iter"]):
            _so.Guard("BFGS", state.get("n_iter", 0) + 1, _ADVICE).point(f, g)
            if float(g.abs().max()) <= hp["tolerance_grad"]:
                break
            x = _so.flat_params(params)
            m = state.get("inverse_hessian")
            if m is None:
                m = torch.eye(x.numel(), dtype=x.dtype, device=x.device)  # M_0 = I
            if "prev_params" in state:
                s, y = x - state["prev_params"], g - state["prev_grad"]
                scale = hp["init_scale"] and state.get("updates", 0) == 0
                if bfgs_update_(m, s, y, scale):
                    state["updates"] = state.get("updates", 0) + 1
                else:
                    state["skipped_updates"] = state.get("skipped_updates", 0) + 1
            rho = -(m @ g)  # ρ_t = −M_t g_t
            gtd = torch.dot(g, rho)
            if not float(gtd) < 0.0:  # M lost positive definiteness to rounding: start again from M = I
                m = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
                rho, gtd = -g, -torch.dot(g, g)
                state["updates"] = 0
                state["resets"] = state.get("resets", 0) + 1
            trial = hp["lr"] if state.get("updates", 0) > 0 else _so.first_trial_step(hp["lr"], g)
            if hp["line_search"] is None:
                trial = hp["lr"]
            # ε* by the line search; θ_{t+1} = θ_t + ε*ρ_t
            guard = _so.Guard("BFGS", state.get("n_iter", 0) + 1, _ADVICE)
            _, found = _so.advance(
                closure, params, x, rho, trial, f, g, gtd, hp["line_search"], c1=hp["c1"], c2=hp["c2"], guard=guard
            )
            state.update(inverse_hessian=m, prev_params=x, prev_grad=g, n_iter=state.get("n_iter", 0) + 1)
            if i + 1 < hp["max_iter"]:
                f, g = found if found is not None else _so.evaluate(closure, params)[1:]
        return orig_loss


def bfgs_update_(m: torch.Tensor, s: torch.Tensor, y: torch.Tensor, scale: bool) -> bool:
    """M ← (I − ϱsyᵀ)M(I − ϱysᵀ) + ϱssᵀ in place, ϱ = 1/(yᵀs); False (M unchanged) if yᵀs is too small."""
    ys = torch.dot(y, s)
    threshold = torch.finfo(s.dtype).eps ** 0.5 * torch.linalg.vector_norm(y) * torch.linalg.vector_norm(s)
    if not float(ys) > float(threshold):  # curvature condition yᵀs > 0, with a margin for rounding
        return False
    if scale:
        m.copy_(torch.eye(m.shape[0], dtype=m.dtype, device=m.device) * (ys / torch.dot(y, y)))
    varrho = 1.0 / ys
    my = m @ y  # M symmetric, so yᵀM = (My)ᵀ
    # Expanded: M − ϱ(s(My)ᵀ + (My)sᵀ) + (ϱ² yᵀMy + ϱ) ssᵀ, O(n²) with no n × n temporaries.
    coefficient = varrho * varrho * torch.dot(y, my) + varrho
    m.addr_(s, my, alpha=-float(varrho)).addr_(my, s, alpha=-float(varrho)).addr_(s, s, alpha=float(coefficient))
    return True


_ADVICE = (
    "Lower `lr` or use line_search='strong_wolfe'; parameters are left at the last finite point. Find the operation "
    "that overflows with torch.autograd.set_detect_anomaly(True)."
)


def _check_hyperparameters(group: dict[str, Any]) -> None:
    _common.check_lr(group["lr"])
    _so.check_option("line_search", group["line_search"], _so.LINE_SEARCHES)
    check_int("max_iter", group["max_iter"], 1)
    check_range("tolerance_grad", group["tolerance_grad"], 0.0)
    check_bool("init_scale", group["init_scale"])
    c1 = check_range("c1", group["c1"], 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_range("c2", group["c2"], c1, 1.0, low_inclusive=False, high_inclusive=False)
