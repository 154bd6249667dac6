"""Natural gradient with the empirical Fisher matrix, solved by conjugate gradients.

An approximate second-order method (§8.6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from lightopt._validation import check_int, check_range
from lightopt.optim import _common
from lightopt.optim import _second_order as _so

__all__ = ["NaturalGradient", "fisher_vector_product", "per_example_gradients"]

_SHARED = ("damping", "cg_max_iter", "cg_tol")


class NaturalGradient(_so.FlatOptimizer):
    r"""Natural gradient descent with the damped empirical Fisher matrix, an approximate second-order method (§8.6).

    .. math::
        \begin{aligned}
        &\textbf{require: } \text{learning rate } \epsilon,\ \text{damping } \lambda > 0,\ \theta \\
        &\textbf{loop} \\
        &\quad g_i \leftarrow \nabla_\theta L(f(x^{(i)}; \theta), y^{(i)}), \quad i = 1, \dots, m
            \qquad G = [g_1, \dots, g_m]^\top \in \mathbb{R}^{m \times n} \\
        &\quad g \leftarrow \tfrac{1}{m} \textstyle\sum_i g_i; \quad
            F = \tfrac{1}{m} \textstyle\sum_i g_i g_i^\top = \tfrac{1}{m} G^\top G \\
        &\quad \text{solve } (F + \lambda I)\, d = g \text{ by CG on } (F + \lambda I)v
            = \tfrac{1}{m} G^\top (G v) + \lambda v \\
        &\quad \theta \leftarrow \theta - \epsilon\, d
        \end{aligned}

    ==========  ===============  =========================================================
    symbol      argument         meaning
    ==========  ===============  =========================================================
    ε           ``lr``           step size, read every step (may differ per param group)
    λ           ``damping``      Tikhonov damping of F, as α in eq. 8.28
    —           ``cg_max_iter``  Fisher-vector products per step, at most
    —           ``cg_tol``       CG stops at ‖r‖ <= ``cg_tol``·‖g‖
    ==========  ===============  =========================================================

    The book's methods precondition by the Hessian; this one preconditions by the empirical
    Fisher matrix F, the mean outer product of per-example gradients (a Gauss–Newton-like,
    always positive semi-definite curvature). F is never formed: each CG iteration costs two
    products with the m × n matrix G of per-example gradients.

    **Closure contract.** Per-example gradients need the per-example losses, not their mean:
    ``step(closure)`` calls ``closure()`` once, and the closure must *return the vector of
    per-example losses* (shape [m], e.g. ``F.cross_entropy(logits, y, reduction="none")``) and
    must *not* call ``backward()``. G is computed with
    ``torch.autograd.grad(..., is_grads_batched=True)`` (vmap over the backward pass). A scalar
    loss is an error. ``step`` returns the mean loss (detached) and leaves the mean gradient g
    in ``.grad``.

    **Sizes.** G takes m × n numbers (m examples, n parameters over all groups), plus the
    memory of m batched backward passes: it suits models up to about 10⁵–10⁶ parameters with
    batches of 10²–10³ examples. m < n makes F singular; λ > 0 keeps the system solvable.

    **From a LightningModule.** The closure returns a vector, which Lightning's automatic
    optimization does not allow, so use manual optimization::

        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            x, y = batch
            opt = self.optimizers()
            loss = opt.step(lambda: F.cross_entropy(self(x), y, reduction="none"))
            self.log("train_loss", loss)

    **Non-finite values.** Each step checks the per-example losses, g, d and the step before
    changing any parameter, and raises :class:`~lightopt.optim.NonFiniteError` naming the step
    and the quantity.

    Differences from ``torch.optim``: torch has no natural-gradient optimizer. ``damping`` and the
    CG settings act on the whole vector θ and must be the same in every param group; ``lr`` may
    differ per group (it scales that group's part of d).

    Args:
        params: parameters or param groups (all of one dtype and device).
        lr: ε >= 0.
        damping: λ >= 0 (> 0 unless m >= n and G has full rank).
        cg_max_iter: Fisher-vector products per step (>= 1).
        cg_tol: relative residual at which CG stops (>= 0).

    Example:
        >>> import torch
        >>> from lightopt.optim import NaturalGradient
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
        >>> model = torch.nn.Linear(3, 2)
        >>> opt = NaturalGradient(model.parameters(), lr=0.5, damping=1e-2)
        >>> def per_example_losses():
        ...     return torch.nn.functional.cross_entropy(model(x), y, reduction="none")
        >>> first = opt.step(per_example_losses)
        >>> later = [opt.step(per_example_losses) for _ in range(5)][-1]
        >>> bool(later < first)
        True
    """

    _shared = _SHARED

    @staticmethod
    def _check_group(group: dict[str, Any]) -> None:
        _check_hyperparameters(group)

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        damping: float = 1e-3,
        *,
        cg_max_iter: int = 50,
        cg_tol: float = 1e-6,
    ) -> None:
        defaults = dict(lr=lr, damping=damping, cg_max_iter=cg_max_iter, cg_tol=cg_tol)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """One natural-gradient step; ``closure`` returns the per-example losses (shape [m]) without backward()."""
        if closure is None:
            raise ValueError(
                "NaturalGradient.step() needs a closure that returns the per-example losses, shape [m], e.g. "
                "lambda: F.cross_entropy(model(x), y, reduction='none'), without calling backward(). In Lightning, "
                "use manual optimization and call opt.step(closure) in training_step."
            )
        hp = _so.shared_hyperparameters(self, _SHARED)
        params = [p for p in _so.all_params(self) if p.requires_grad]
        with torch.enable_grad():
            losses = closure()
        big_g = per_example_gradients(losses, params)  # G, rows g_i
        g = big_g.mean(dim=0)  # g ← (1/m) Σ g_i
        state = self.state[params[0]]
        guard = _so.Guard("NaturalGradient", state.get("n_iter", 0) + 1, _ADVICE)
        guard.tensor("the per-example losses", losses.detach())
        guard.tensor("the gradient", g)

        def damped_fvp(v: torch.Tensor) -> torch.Tensor:
            return fisher_vector_product(big_g, v) + hp["damping"] * v  # (F + λI) v

        d, _ = _so.conjugate_gradient(damped_fvp, g, hp["cg_max_iter"], hp["cg_tol"])  # solve (F + λI) d = g
        guard.tensor("the natural-gradient direction d", d)
        pieces = dict(zip(params, zip(_so.split_like(d, params), _so.split_like(g, params))))
        for group in self.param_groups:
            for p in group["params"]:
                if p in pieces:
                    step, grad = pieces[p]
                    p.add_(step, alpha=-group["lr"])  # θ ← θ − ε d
                    p.grad = grad.clone()
        state["n_iter"] = state.get("n_iter", 0) + 1
        return losses.detach().mean()


def per_example_gradients(losses: Any, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The m × n matrix G whose row i is ∇_θ L_i, by one batched (vmapped) backward pass."""
    if not isinstance(losses, torch.Tensor):
        raise TypeError(
            "NaturalGradient's closure must return the per-example losses as a tensor of shape [m], but it returned "
            f"{type(losses).__name__}."
        )
    if losses.dim() != 1 or losses.numel() == 0:
        raise ValueError(
            "NaturalGradient's closure must return the per-example losses, a 1-D tensor of shape [m] (use "
            f"reduction='none'), without calling backward(), but it returned a tensor of shape {list(losses.shape)}."
        )
    if not losses.requires_grad:
        raise ValueError(
            "The per-example losses returned by the closure do not require grad: compute them from the parameters "
            "with autograd enabled, and do not call backward() or detach() them."
        )
    m = losses.shape[0]
    eye = torch.eye(m, dtype=losses.dtype, device=losses.device)
    grads = torch.autograd.grad(losses, list(params), grad_outputs=eye, is_grads_batched=True, allow_unused=True)
    return torch.cat(
        [gr.reshape(m, -1) if gr is not None else p.new_zeros(m, p.numel()) for gr, p in zip(grads, params)],
        dim=1,
    )


def fisher_vector_product(big_g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """F v = (1/m) Gᵀ(G v), with F the empirical Fisher matrix of the rows of G, never formed."""
    return big_g.T @ (big_g @ v) / big_g.shape[0]


_ADVICE = (
    "Raise `damping` or lower `lr`; the parameters were left unchanged. Find the operation that overflows with "
    "torch.autograd.set_detect_anomaly(True)."
)


def _check_hyperparameters(group: dict[str, Any]) -> None:
    _common.check_lr(group["lr"])
    check_range("damping", group["damping"], 0.0)
    check_int("cg_max_iter", group["cg_max_iter"], 1)
    check_range("cg_tol", group["cg_tol"], 0.0)
