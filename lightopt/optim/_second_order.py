"""Helpers shared by the second-order optimizers of §8.6.

The methods of §8.6 act on θ as one vector: these helpers flatten the parameters of every param
group into one vector and back, evaluate a closure, form Hessian-vector products (exact double
backward, or central differences of the gradient), solve a linear system by conjugate gradients
on matrix-vector products, and run the strong-Wolfe line search. Each piece of math exists here
once; the optimizers only call it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lightopt import _compat
from lightopt._validation import check_choice
from lightopt.optim import _finite

LINE_SEARCHES = (None, "strong_wolfe")
# The strong-Wolfe search stops bracketing when the interval, times max|d|, is below this.
TOLERANCE_CHANGE = 1e-9
MAX_LINE_SEARCH_EVALS = 25

MatVec = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- arguments


def check_option(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """A string option (or ``None`` where ``None`` is one of ``choices``)."""
    if value is not None and not isinstance(value, str):
        listed = ", ".join(repr(c) for c in choices)
        raise TypeError(f"`{name}` must be one of {listed}, but got {name}={value!r} ({type(value).__name__}).")
    return check_choice(name, value, choices)


def all_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def check_params(params: Sequence[torch.Tensor], name: str) -> None:
    """One flat vector needs one dtype and one device, and dense floating-point parameters."""
    if not params:
        raise ValueError(f"{name} got no parameters to optimize.")
    first = params[0]
    for p in params:
        if p.is_complex():
            raise TypeError(
                f"{name} needs real floating-point parameters, but got one of dtype {p.dtype}. It treats θ as one real "
                "vector and forms products with its curvature; for a complex parameter keep its real and imaginary "
                "parts as a real parameter (torch.view_as_real) in the model, or use LBFGS or a first-order optimizer, "
                "which step complex parameters as pairs of reals."
            )
        if not p.is_floating_point():
            raise TypeError(f"{name} needs real floating-point parameters, but got one of dtype {p.dtype}.")
        if p.is_sparse:
            raise TypeError(f"{name} does not support sparse parameters; use dense parameters.")
        if p.dtype != first.dtype or p.device != first.device:
            raise TypeError(
                f"{name} treats all parameters as one vector, so they must share one dtype and device, but got "
                f"{first.dtype} on {first.device} and {p.dtype} on {p.device}. Cast the model with `.to(...)`."
            )


def shared_hyperparameters(optimizer: torch.optim.Optimizer, names: Sequence[str]) -> dict[str, Any]:
    """Read hyperparameters that act on the whole vector θ; every param group must agree on them."""
    groups = optimizer.param_groups
    values = {name: groups[0][name] for name in names}
    for i, group in enumerate(groups[1:], start=1):
        for name in names:
            if group[name] != values[name]:
                raise ValueError(
                    f"{type(optimizer).__name__} updates all parameters as one vector, so `{name}` must be the same in "
                    f"every param group, but got {name}={values[name]!r} in group 0 and {name}={group[name]!r} in "
                    f"group {i}."
                )
    return values


class Guard:
    """Raises :class:`~lightopt.optim.NonFiniteError` for a non-finite loss, gradient or step of one iteration.

    The second-order optimizers read the loss and gradient on the host every iteration anyway, so
    each iteration checks the loss and gradient where it starts, and the point it moves to
    before the parameters are set there (an error leaves them at the last finite point).
    """

    def __init__(self, name: str, iteration: int, advice: str) -> None:
        self.name, self.iteration, self.advice = name, iteration, advice

    def number(self, quantity: str, value: float) -> None:
        _finite.check_number(self.name, self.iteration, quantity, value, self.advice)

    def tensor(self, quantity: str, value: torch.Tensor) -> None:
        _finite.check_tensor(self.name, self.iteration, quantity, value, self.advice)

    def point(self, f: float, g: torch.Tensor) -> None:
        self.number("the loss", f)
        self.tensor("the gradient", g)


def missing_closure_error(name: str, what: str) -> ValueError:
    return ValueError(
        f"{name}.step() needs a closure: call optimizer.step(closure) with a closure that {what}. Lightning's "
        "automatic optimization passes one."
    )


# ----------------------------------------------------------------------------- flat vectors


class FlatOptimizer(torch.optim.Optimizer):
    """Base of the optimizers that treat all param groups as one vector θ.

    Subclasses set ``_shared`` (hyperparameters every group must share) and ``_check_group`` (the
    argument checks of one group). Both run on the defaults before any side effect and on every
    group added later; a rejected group is removed again.
    """

    _shared: tuple[str, ...] = ()

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self._check_group(defaults)
        super().__init__(params, defaults)
        check_params(all_params(self), type(self).__name__)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            self._check_group(self.param_groups[-1])
            shared_hyperparameters(self, self._shared)
            if len(self.param_groups) > 1:  # the first group is checked with the others at the end of __init__
                check_params(all_params(self), type(self).__name__)
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    @staticmethod
    def _check_group(group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _begin(self, closure: Callable[[], Any] | None) -> tuple[dict[str, Any], list[torch.Tensor], dict[str, Any]]:
        """The start of every full-batch ``step``: the closure check, the shared hyperparameters, θ's
        tensors and the optimizer's one state dict (kept under the first parameter)."""
        if closure is None:
            raise missing_closure_error(
                type(self).__name__, "computes the full-batch loss, calls loss.backward() and returns the loss"
            )
        params = all_params(self)
        return shared_hyperparameters(self, self._shared), params, self.state[params[0]]


def flat_params(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """θ as one vector (a copy), in the order of the param groups."""
    return torch.cat([p.detach().reshape(-1) for p in params])


@torch.no_grad()
def set_flat_params_(params: Sequence[torch.Tensor], vector: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(vector[offset : offset + n].view_as(p))
        offset += n


def split_like(vector: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Views of ``vector`` shaped like ``params``."""
    pieces = torch.split(vector, [p.numel() for p in params])
    return [piece.view_as(p) for piece, p in zip(pieces, params)]


def flat_grad(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The gradients as one detached vector; a parameter without a gradient contributes zeros."""
    return torch.cat(
        [p.grad.detach().reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1) for p in params]
    )


def evaluate(closure: Callable[[], Any], params: Sequence[torch.Tensor]) -> tuple[Any, float, torch.Tensor]:
    """Run ``closure`` (gradients cleared first) and return (its loss, the loss as a float, the flat gradient)."""
    for p in params:
        p.grad = None
    with torch.enable_grad():
        loss = closure()
    if loss is None:
        raise ValueError(
            "The closure returned None; it must compute the loss, call backward() on it and return it. "
            "(In Lightning, training_step must return the loss.)"
        )
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    return loss, value, flat_grad(params)


def grads_carry_graph(params: Sequence[torch.Tensor]) -> bool:
    """True when the closure ran ``backward(create_graph=True)``, so the gradients can be differentiated."""
    return any(p.grad is not None and p.grad.requires_grad for p in params)


def detach_grads_(params: Sequence[torch.Tensor]) -> None:
    """Drop the graph held by gradients from ``backward(create_graph=True)`` (it references the parameters)."""
    for p in params:
        if p.grad is not None and p.grad.requires_grad:
            p.grad = p.grad.detach()


# ----------------------------------------------------------------------------- Hessian-vector products


def graph_hvp(params: Sequence[torch.Tensor]) -> MatVec:
    """Exact ``v ↦ Hv`` by differentiating the gradients, which must carry a graph (``create_graph=True``)."""
    pairs = [(i, p.grad) for i, p in enumerate(params) if p.grad is not None and p.grad.requires_grad]
    outputs = [grad for _, grad in pairs]

    def hvp(v: torch.Tensor) -> torch.Tensor:
        pieces = split_like(v, params)
        columns = torch.autograd.grad(
            outputs, list(params), grad_outputs=[pieces[i] for i, _ in pairs], retain_graph=True, allow_unused=True
        )
        return torch.cat(
            [c.reshape(-1) if c is not None else torch.zeros_like(p).reshape(-1) for c, p in zip(columns, params)]
        )

    return hvp


def finite_difference_step(x: torch.Tensor) -> float:
    """Length of the perturbation h‖v‖ of the central difference: ε_mach^{1/3}·max(1, ‖θ‖)."""
    return torch.finfo(x.dtype).eps ** (1.0 / 3.0) * max(1.0, float(torch.linalg.vector_norm(x)))


def finite_difference_hvp(closure: Callable[[], Any], params: Sequence[torch.Tensor], x: torch.Tensor) -> MatVec:
    """``v ↦ Hv ≈ (g(θ + hv) − g(θ − hv)) / 2h`` through the closure, with h‖v‖ = ε_mach^{1/3}·max(1, ‖θ‖).

    Exact for quadratics up to rounding (the gradient is linear there); the error is O(h²) for
    smooth losses and the rounding error about ε_mach‖g‖/h. Costs two closure calls, and leaves
    the parameters at ``x``.
    """
    length = finite_difference_step(x)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        norm = float(torch.linalg.vector_norm(v))
        if norm == 0.0:
            return torch.zeros_like(v)
        h = length / norm
        set_flat_params_(params, x + h * v)
        g_plus = evaluate(closure, params)[2]
        set_flat_params_(params, x - h * v)
        g_minus = evaluate(closure, params)[2]
        set_flat_params_(params, x)
        return (g_plus - g_minus) / (2.0 * h)

    return hvp


def dense_matrix(matvec: MatVec, like: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix of a symmetric linear map, column by column (n products), symmetrized."""
    eye = torch.eye(like.numel(), dtype=like.dtype, device=like.device)
    columns = torch.stack([matvec(e) for e in eye], dim=1)
    return 0.5 * (columns + columns.T)


# ----------------------------------------------------------------------------- linear solvers


def solve_dense(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve ``a x = b`` for symmetric ``a``: Cholesky when positive definite, else LU, else least squares."""
    factor, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(b.unsqueeze(1), factor).squeeze(1)
    x, info = torch.linalg.solve_ex(a, b)
    if int(info) == 0 and bool(torch.isfinite(x).all()):
        return x
    return torch.linalg.pinv(a, hermitian=True) @ b  # singular: the minimum-norm least-squares solution


def conjugate_gradient(matvec: MatVec, b: torch.Tensor, max_iter: int, tol: float) -> tuple[torch.Tensor, int]:
    """Solve ``A x = b`` for symmetric ``A`` by linear conjugate gradients from ``x = 0``.

    Stops when ``‖r‖ <= tol·‖b‖``, after ``max_iter`` products, or at a breakdown ``pᵀAp = 0``.
    ``A`` need not be positive definite: on an indefinite system the iteration goes on through
    directions of negative curvature (it solves the system, as a dense solve would). Returns
    ``(x, number of products)``.
    """
    x = torch.zeros_like(b)
    r = b.clone()  # residual b − A x
    p = r.clone()
    rr = torch.dot(r, r)
    stop = tol**2 * float(rr)
    tiny = torch.finfo(b.dtype).tiny
    products = 0
    while products < max_iter and float(rr) > stop:
        ap = matvec(p)
        products += 1
        curvature = torch.dot(p, ap)
        if abs(float(curvature)) <= tiny:
            break
        alpha = rr / curvature
        x.add_(alpha * p)
        r.sub_(alpha * ap)
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, products


# ----------------------------------------------------------------------------- line search


def strong_wolfe(
    closure: Callable[[], Any],
    params: Sequence[torch.Tensor],
    x: torch.Tensor,
    d: torch.Tensor,
    t: float,
    f: float,
    g: torch.Tensor,
    gtd: torch.Tensor,
    *,
    c1: float,
    c2: float,
) -> tuple[float, float, torch.Tensor, int]:
    """Search ε along ``d`` from ``x`` (strong Wolfe, first trial ``t``); leave θ = x + ε d.

    Returns ``(ε, loss, flat gradient at the new point, closure calls)``.
    """

    def obj_func(x0: torch.Tensor, step: float, direction: torch.Tensor) -> tuple[float, torch.Tensor]:
        set_flat_params_(params, x0 + step * direction)
        _, loss, grad = evaluate(closure, params)
        set_flat_params_(params, x0)
        return loss, grad

    f_new, g_new, t, evals = _compat.strong_wolfe(
        obj_func, x, t, d, f, g, gtd, c1=c1, c2=c2, tolerance_change=TOLERANCE_CHANGE, max_ls=MAX_LINE_SEARCH_EVALS
    )
    set_flat_params_(params, x + t * d)
    return t, f_new, g_new, evals


def advance(
    closure: Callable[[], Any],
    params: Sequence[torch.Tensor],
    x: torch.Tensor,
    d: torch.Tensor,
    t: float,
    f: float,
    g: torch.Tensor,
    gtd: torch.Tensor,
    line_search: str | None,
    *,
    c1: float,
    c2: float,
    guard: Guard,
) -> tuple[float, tuple[float, torch.Tensor] | None]:
    """θ ← x + ε d, with ε = ``t`` (no line search) or the strong-Wolfe step from trial ``t``.

    Returns ε and, after a line search, the loss and flat gradient at the new point (else None).
    ``guard`` checks the direction and the new point; θ stays at x when either is not finite.
    """
    guard.tensor("the search direction", d)
    if line_search is None:
        new = x + t * d
        guard.tensor("the new parameters", new)
        set_flat_params_(params, new)
        return t, None
    t, f_new, g_new, _ = strong_wolfe(closure, params, x, d, t, f, g, gtd, c1=c1, c2=c2)
    try:
        guard.number("the line-search step", t)
        guard.point(f_new, g_new)
    except _finite.NonFiniteError:
        set_flat_params_(params, x)
        raise
    return t, (f_new, g_new)


def first_trial_step(lr: float, g: torch.Tensor) -> float:
    """The first trial step of a search along −g: lr·min(1, 1/‖g‖₁), as torch.optim.LBFGS."""
    return lr * min(1.0, 1.0 / max(float(g.abs().sum()), torch.finfo(g.dtype).tiny))
