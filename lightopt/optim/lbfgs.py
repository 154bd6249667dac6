"""L-BFGS (§8.6.3): torch's implementation, with the strong-Wolfe line search on by default."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lightopt._validation import check_int, check_range
from lightopt.optim import _common, _finite
from lightopt.optim import _second_order as _so

__all__ = ["LBFGS"]

_ADVICE = (
    "The parameters were restored to their values before this step. Lower `lr`, keep "
    "line_search_fn='strong_wolfe', or find the operation with torch.autograd.set_detect_anomaly(True)."
)


class LBFGS(torch.optim.LBFGS):
    r"""Limited-memory BFGS, §8.6.3: ``torch.optim.LBFGS`` with the strong-Wolfe line search by default.

    .. math::
        \begin{aligned}
        &\textbf{require: } \theta_0,\ \text{history } k \\
        &\textbf{loop (up to } \texttt{max\_iter} \text{ times per } \texttt{step)} \\
        &\quad g_t \leftarrow \tfrac{1}{m} \nabla_\theta \textstyle\sum_i L(f(x^{(i)}; \theta), y^{(i)}) \\
        &\quad \rho_t = -M_t g_t, \quad M_t \text{ from the last } k \text{ pairs }
            (s, y) \text{ by the two-loop recursion, } M^{(0)} = \tfrac{s^\top y}{y^\top y} I \\
        &\quad \epsilon^* \approx \operatorname{argmin}_\epsilon J(\theta_t + \epsilon \rho_t)
            \quad \text{(strong-Wolfe line search)} \\
        &\quad \theta_{t+1} = \theta_t + \epsilon^* \rho_t
        \end{aligned}

    ==============  =====================  ===================================================
    book            argument               meaning
    ==============  =====================  ===================================================
    stored vectors  ``history_size``       number of (s, y) pairs kept (book: 0, memoryless)
    ε*              ``line_search_fn``     ``"strong_wolfe"`` (default here) or ``None``
    —               ``lr``                 fixed step without a search; trial step with one
    ==============  =====================  ===================================================

    This class adds nothing to torch's algorithm: it runs ``torch.optim.LBFGS`` unchanged, and
    only validates the arguments with lightopt's messages and changes one default.

    Differences from the book:
        * The book's L-BFGS is memoryless (M^{(t−1)} = I before each update, "optionally storing
          some vectors"); torch keeps up to ``history_size=100`` pairs and starts the recursion
          from the scaled identity (sᵀy/yᵀy)·I, so ``history_size=1`` is *scaled* memoryless BFGS.
        * The direction is −M g (the book's eq. 8.33 prints +M g).

    Differences from ``torch.optim.LBFGS``:
        * ``line_search_fn="strong_wolfe"`` by default; torch's default is ``None`` (a fixed step
          ``lr``, the first one min(1, 1/‖g‖₁)·``lr``), which diverges easily.
        * Arguments are checked when the optimizer is built, and a missing closure is a
          ``ValueError``.

    **Non-finite values.** Every closure evaluation checks the loss and the gradient and raises
    :class:`~lightopt.optim.NonFiniteError` naming the step, the evaluation and the quantity,
    with the parameters restored to their values before the step (torch's LBFGS goes on with
    NaN). The checks cost a copy of θ per step and one pass over the gradient per evaluation,
    small beside the closure. Complex parameters are stepped as pairs of reals (torch's own
    handling).

    Semantics kept from torch: one ``step(closure)`` runs up to ``max_iter=20`` iterations and
    ``max_eval`` closure calls (so one Lightning step is up to 20 iterations); only a single
    param group is supported; the closure must clear the gradients, compute the loss, call
    ``backward()`` and return the loss (Lightning's automatic optimization passes such a closure).

    Args:
        params: parameters (a single param group).
        lr: >= 0, the fixed step, or the trial step of the line search.
        max_iter: iterations per ``step`` (>= 1).
        max_eval: closure calls per ``step`` (>= 1; default ``max_iter * 5 // 4``).
        tolerance_grad: stop once ‖g‖_∞ <= this (>= 0).
        tolerance_change: stop once a step or loss change is below this (>= 0).
        history_size: pairs kept (>= 1).
        line_search_fn: ``"strong_wolfe"`` or ``None``.

    Example:
        >>> import torch
        >>> from lightopt.optim import LBFGS
        >>> a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> theta = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        >>> opt = LBFGS([theta])
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = 0.5 * theta @ a @ theta - theta.sum()
        ...     loss.backward()
        ...     return loss
        >>> _ = opt.step(closure)
        >>> theta.detach().round(decimals=6)
        tensor([0.2000, 0.4000], dtype=torch.float64)
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = "strong_wolfe",
    ) -> None:
        _common.check_lr(lr)
        check_int("max_iter", max_iter, 1)
        if max_eval is not None:
            check_int("max_eval", max_eval, 1)
        check_range("tolerance_grad", tolerance_grad, 0.0)
        check_range("tolerance_change", tolerance_change, 0.0)
        check_int("history_size", history_size, 1)
        _so.check_option("line_search_fn", line_search_fn, _so.LINE_SEARCHES)
        params = list(params)
        if sum(isinstance(p, dict) for p in params) > 1:
            raise ValueError(
                f"LBFGS supports a single param group, but got {len(params)} groups. Pass the parameters as one "
                "group (per-group options are not supported), or use BFGS or ConjugateGradient, which flatten groups."
            )
        super().__init__(
            params,
            lr=lr,
            max_iter=max_iter,
            max_eval=max_eval,
            tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change,
            history_size=history_size,
            line_search_fn=line_search_fn,
        )

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Run up to ``max_iter`` iterations; ``closure`` computes the loss, calls backward() and returns it."""
        if closure is None:
            raise _so.missing_closure_error(
                type(self).__name__,
                "clears the gradients, computes the loss, calls loss.backward() and returns the loss",
            )
        self._steps = getattr(self, "_steps", 0) + 1
        params = self.param_groups[0]["params"]
        before = [p.detach().clone() for p in params]
        evaluations = [0]

        def checked_closure() -> Any:
            loss = closure()
            evaluations[0] += 1
            guard = _so.Guard("LBFGS", self._steps, f"(closure evaluation {evaluations[0]} of this step) " + _ADVICE)
            try:
                guard.number("the loss", float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss))
                grads = [p.grad for p in params if p.grad is not None]
                bad = _finite.first_nonfinite(grads)
                if bad is not None:
                    guard.tensor("the gradient", grads[bad])
            except _finite.NonFiniteError:
                with torch.no_grad():
                    for p, old in zip(params, before):
                        p.copy_(old)
                raise
            return loss

        return super().step(checked_closure)
