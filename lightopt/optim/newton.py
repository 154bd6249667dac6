"""Newton's method with Levenberg–Marquardt damping: Algorithm 8.8 and eq. 8.28 (§8.6.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lightopt._validation import check_int, check_range
from lightopt.optim import _common
from lightopt.optim import _second_order as _so

__all__ = ["EXACT_MAX_PARAMS", "SOLVERS", "Newton"]

SOLVERS = ("auto", "exact", "cg")
# solver="auto" forms the exact Hessian up to this many parameters, and runs CG above it.
EXACT_MAX_PARAMS = 100
_C1, _C2 = 1e-4, 0.9  # strong-Wolfe constants (sufficient decrease, curvature)
_HYPERPARAMETERS = ("lr", "damping", "solver", "cg_max_iter", "cg_tol", "line_search")


class Newton(_so.FlatOptimizer):
    r"""Newton's method, Algorithm 8.8 (§8.6.1), with Levenberg–Marquardt damping (eq. 8.28).

    .. math::
        \begin{aligned}
        &\textbf{require: } \theta_0,\ \text{damping } \alpha \ge 0,\ \text{a training set of } m
            \text{ examples} \\
        &\textbf{loop} \\
        &\quad g \leftarrow \tfrac{1}{m} \nabla_\theta \textstyle\sum_i L(f(x^{(i)}; \theta), y^{(i)}) \\
        &\quad H \leftarrow \tfrac{1}{m} \nabla^2_\theta \textstyle\sum_i L(f(x^{(i)}; \theta), y^{(i)}) \\
        &\quad \text{solve } (H + \alpha I)\, d = g; \quad \Delta\theta = -d
            && \text{(book: } \Delta\theta = -H^{-1} g) \\
        &\quad \theta \leftarrow \theta + \epsilon\, \Delta\theta
            && (\epsilon = \texttt{lr}\text{, or found by the line search})
        \end{aligned}

    ==========  ===============  ==============================================================
    book        argument         meaning
    ==========  ===============  ==============================================================
    α           ``damping``      Levenberg–Marquardt damping (eq. 8.28), read every step
    —           ``lr``           step ε on Δθ (1 = the book); first trial step of the search
    H⁻¹g        ``solver``       how (H + αI) d = g is solved: ``"exact"``, ``"cg"``, ``"auto"``
    ==========  ===============  ==============================================================

    **Solving, never inverting.** ``solver="exact"`` forms H + αI from n Hessian-vector products
    (n = number of parameters, over all param groups) and solves by Cholesky, by LU when the
    matrix is not positive definite, and by least squares when it is singular: O(n²) memory and
    O(n³) time. ``solver="cg"`` is Hessian-free: linear conjugate gradients on products
    (H + αI)v, at most ``cg_max_iter`` of them, until ‖r‖ <= ``cg_tol``·‖g‖; O(n) memory.
    ``solver="auto"`` takes ``"exact"`` for at most 100 parameters and ``"cg"`` above.

    **Hessian-vector products.** Each step calls the closure once for g, then:

    * if the gradients carry a graph (the closure ran ``loss.backward(create_graph=True)``), Hv is
      exact, by differentiating g again;
    * otherwise Hv is the central difference (g(θ + hv) − g(θ − hv)) / 2h of gradients
      re-evaluated through the closure, with h‖v‖ = ε_mach^{1/3}·max(1, ‖θ‖) (ε_mach of the
      parameters' dtype): exact for quadratics up to rounding, O(h²) error otherwise, and two
      closure calls per product. A plain closure, as Lightning's and ``torch.optim.LBFGS``'s, runs
      ``backward()`` without ``create_graph``, so this is what it gets.

    The closure must compute the full-batch loss, call ``backward()`` and return the loss; this
    optimizer clears the gradients before each call. After the step the gradients hold no graph.
    Gradient clipping inside the closure (``Trainer(gradient_clip_val=...)``) changes g and the
    differences of g, so leave it off.

    **Indefinite H.** The book warns that Newton's method is attracted to saddle points: when
    H + αI has negative eigenvalues (damping too small) the solved step may go uphill or land on a
    saddle (on x² − y², one undamped step lands exactly on the saddle (0, 0)). Without a line
    search this optimizer takes that step as the book does. With ``line_search="strong_wolfe"``,
    a step that is not a descent direction (gᵀΔθ >= 0) is replaced by −g (steepest descent), and
    ``state["descent_fallbacks"]`` counts how often; a larger ``damping`` avoids it.

    **From a LightningModule.** Return ``Newton(self.parameters(), ...)`` from
    ``configure_optimizers``, use a full-batch dataloader (the method assumes the exact g and H;
    §8.1.3 suggests batches of about 10,000 at least) and set ``max_steps`` (or ``max_epochs``
    with one batch) to the number of Newton iterations; Lightning's automatic optimization passes
    the closure. For exact Hessian-vector products, override ``backward``::

        def backward(self, loss, *args, **kwargs):
            loss.backward(create_graph=True)

    **Non-finite values.** Every iteration checks the loss and gradient, the step Δθ and the new
    point before moving there, and raises :class:`~lightopt.optim.NonFiniteError` naming the
    iteration and the quantity (the parameters stay at the last finite point); these checks read
    values the iteration reads anyway. An undamped or lightly damped Newton method on a
    non-convex loss can take huge steps that end in NaN a few iterations later; the error says so
    where the book's algorithm would silently go on.

    Differences from the book:
        * Damping α (eq. 8.28) and an optional step ε (``lr``) or line search; α = 0 and ε = 1 is
          Algorithm 8.8.
        * H is never inverted: (H + αI) d = g is solved.

    Differences from ``torch.optim``: there is no Newton optimizer in torch. All param groups are
    flattened into one vector, so every hyperparameter must be the same in every group.

    Args:
        params: parameters or param groups (all of one dtype and device).
        lr: ε >= 0, the step taken along Δθ; the first trial step of the line search.
        damping: α >= 0.
        solver: ``"auto"``, ``"exact"`` or ``"cg"``.
        cg_max_iter: maximum Hessian-vector products of the CG solver (>= 1).
        cg_tol: relative residual at which the CG solver stops (>= 0).
        line_search: ``None`` (take ε = ``lr``) or ``"strong_wolfe"``.

    Example:
        >>> import torch
        >>> from lightopt.optim import Newton
        >>> theta = torch.nn.Parameter(torch.tensor([1.0, 0.5], dtype=torch.float64))
        >>> opt = Newton([theta])
        >>> def closure():
        ...     loss = theta[0] ** 2 + 4 * theta[1] ** 2 + theta[0] * theta[1] - theta[0]
        ...     loss.backward()
        ...     return loss
        >>> _ = opt.step(closure)
        >>> theta.detach().round(decimals=6)
        tensor([ 0.5333, -0.0667], dtype=torch.float64)
    """

    _shared = _HYPERPARAMETERS

    @staticmethod
    def _check_group(group: dict[str, Any]) -> None:
        _check_hyperparameters(group)

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        damping: float = 0.0,
        *,
        solver: str = "auto",
        cg_max_iter: int = 100,
        cg_tol: float = 1e-6,
        line_search: str | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, damping=damping, solver=solver, cg_max_iter=cg_max_iter, cg_tol=cg_tol, line_search=line_search
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One Newton iteration; ``closure`` computes the full-batch loss, calls backward() and returns it."""
        hp, params, state = self._begin(closure)
        loss, f, g = _so.evaluate(closure, params)  # g ← (1/m)∇Σ L
        guard = _so.Guard("Newton", state.get("n_iter", 0) + 1, _ADVICE)
        x = _so.flat_params(params)
        try:
            guard.point(f, g)
            # H ← (1/m)∇²Σ L, only ever used through products (H + αI)v.
            hvp = (
                _so.graph_hvp(params)
                if _so.grads_carry_graph(params)
                else _so.finite_difference_hvp(closure, params, x)
            )
            damping = hp["damping"]

            def damped_hvp(v: torch.Tensor) -> torch.Tensor:
                return hvp(v) + damping * v

            solver = hp["solver"]
            if solver == "auto":
                solver = "exact" if x.numel() <= EXACT_MAX_PARAMS else "cg"
            if solver == "exact":
                d = _so.solve_dense(_so.dense_matrix(damped_hvp, x), g)
            else:
                d, _ = _so.conjugate_gradient(damped_hvp, g, hp["cg_max_iter"], hp["cg_tol"])
            delta = -d  # Δθ = −(H + αI)⁻¹ g   (eq. 8.28)
            guard.tensor("the Newton step Δθ", delta)
            if hp["line_search"] is None:
                new = x + hp["lr"] * delta  # θ ← θ + εΔθ
                guard.tensor("the new parameters θ + εΔθ", new)
                _so.set_flat_params_(params, new)
            else:
                gtd = torch.dot(g, delta)
                if not float(gtd) < 0.0:  # not a descent direction: H + αI is not positive definite
                    delta, gtd = -g, -torch.dot(g, g)
                    state["descent_fallbacks"] = state.get("descent_fallbacks", 0) + 1
                if float(gtd) < 0.0:
                    _so.advance(
                        closure, params, x, delta, hp["lr"], f, g, gtd, hp["line_search"], c1=_C1, c2=_C2, guard=guard
                    )
        finally:
            _so.detach_grads_(params)
        state["n_iter"] = state.get("n_iter", 0) + 1
        return loss


_ADVICE = (
    "The Newton step is only as good as H + αI: raise `damping`, use line_search='strong_wolfe', or use exact "
    "Hessian-vector products (loss.backward(create_graph=True)); finite-difference products are unreliable across "
    "kinks such as ReLU's. Parameters are left at the last finite point."
)


def _check_hyperparameters(group: dict[str, Any]) -> None:
    _common.check_lr(group["lr"])
    check_range("damping", group["damping"], 0.0)
    _so.check_option("solver", group["solver"], SOLVERS)
    check_int("cg_max_iter", group["cg_max_iter"], 1)
    check_range("cg_tol", group["cg_tol"], 0.0)
    _so.check_option("line_search", group["line_search"], _so.LINE_SEARCHES)
