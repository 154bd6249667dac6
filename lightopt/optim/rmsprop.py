"""RMSProp, with heavy-ball or Nesterov momentum: Algorithms 8.5 and 8.6 (§8.5.2)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.optimizer import Optimizer

from lightopt._validation import check_bool
from lightopt.optim import _common, _finite

__all__ = ["RMSProp", "rmsprop"]

# torch.optim.RMSprop's arguments that the book's algorithm has no place for (only False accepted).
_TORCH_ONLY = ("centered", "capturable", "differentiable")


class RMSProp(_finite.FirstOrderChecks, Optimizer):
    r"""RMSProp, Algorithm 8.5 (§8.5.2), and RMSProp with Nesterov momentum, Algorithm 8.6.

    .. math::
        \begin{aligned}
        &\textbf{require: } \epsilon,\ \rho,\ \delta,\ \alpha,\ \theta;\quad r = 0,\ v = 0 \\
        &\textbf{loop} \\
        &\quad \tilde\theta \leftarrow \theta + \alpha v
            &&\text{(8.6 only; otherwise } \tilde\theta = \theta) \\
        &\quad g \leftarrow \tfrac{1}{m} \nabla_{\tilde\theta} \textstyle\sum_i L(f(x^{(i)}; \tilde\theta), y^{(i)}) \\
        &\quad r \leftarrow \rho r + (1 - \rho)\, g \odot g \\
        &\quad v \leftarrow \alpha v - \frac{\epsilon}{\sqrt{\delta + r}} \odot g
            &&\text{(8.5: } \alpha = 0) \\
        &\quad \theta \leftarrow \theta + v
        \end{aligned}

    ======  ==============  ======================================================
    book    argument        meaning
    ======  ==============  ======================================================
    ε       ``lr``          global learning rate
    ρ       ``rho``         decay rate of the squared-gradient average
    δ       ``eps``         small constant, *inside* the square root
    α       ``momentum``    momentum coefficient (heavy ball, or Nesterov)
    r, v    (state)         ``square_avg``; ``velocity`` in the book's units
    ======  ==============  ======================================================

    With ``momentum > 0`` and ``nesterov=False`` this is RMSProp with heavy-ball momentum in the
    book's units (the book names the combination in §8.5.4 without a box); ``nesterov=True`` is
    Algorithm 8.6, with the same ``mode`` choice as :class:`lightopt.optim.SGD`:
    ``"lookahead"`` (default, closure-free, exact change of variables φ = θ + αv) or ``"interim"``
    (the book's θ in the parameters, gradient re-evaluated through the closure).

    Differences from the book:
        * Algorithm 8.6 as printed has no δ (its update divides by √r, which is 0/0 for a
          coordinate whose gradients have all been 0). δ stays inside the square root here too.
        * The book gives no default for ρ; 0.9 is Hinton's lecture value.
        * ``weight_decay`` (not in the book) adds ``λθ`` to g.

    Differences from ``torch.optim.RMSprop``:
        * torch adds ``eps`` *outside* the root, ``lr·g/(√r + eps)``; no setting of δ makes the
          two equal. They differ materially when |g| is below about 1e-3 (a few percent of the
          step at |g| ≈ 1e-4). ``eps_in_sqrt=False`` puts it outside, as torch does.
        * torch's ``alpha`` is ρ here; torch's defaults are lr=1e-2, alpha=0.99, eps=1e-8.
        * torch's ``momentum`` keeps a buffer in gradient units scaled by the current lr; here
          the velocity is in the book's units, so a changed lr scales only new contributions.
          torch has no Nesterov form.
        * No ``centered`` (Graves' variant, not the book's: use ``torch.optim.RMSprop(centered=True)``),
          ``capturable``, ``differentiable`` or tensor ``lr``; errors say so.
        * A state dict saved by ``torch.optim.RMSprop`` loads and continues as torch would at a
          constant learning rate (to rounding): ``alpha`` becomes ρ, the group gets
          ``eps_in_sqrt=False`` (torch's placement of ``eps``), torch's ``momentum_buffer`` b
          becomes the velocity ``v = −lr·b``. So does one saved by an earlier lightopt without the
          ``foreach`` key.
        * Sparse gradients are an error, as in torch. Complex parameters are stepped as pairs of
          reals (``torch.view_as_real``), as torch does: r averages the squares of the real and
          imaginary parts separately.
        * Default kernel path: foreach on every device (torch: the for-loop on the CPU, 1.3× slower);
          an explicit ``foreach=False`` runs the loop. torch has no fused RMSprop.
        * NaN/inf checks: see ``check_finite_every`` and :class:`~lightopt.optim.SGD`.

    Args:
        params: parameters or param groups; every hyperparameter may be set per group.
        lr: ε >= 0.
        rho: ρ in [0, 1).
        eps: δ > 0.
        momentum: α in [0, 1).
        nesterov: Algorithm 8.6 (needs ``momentum > 0``).
        mode: ``"lookahead"`` or ``"interim"`` (Nesterov only).
        weight_decay: λ >= 0.
        maximize: ascend the objective (g is replaced by −g).
        eps_in_sqrt: δ inside the root (the book, default) or outside it (torch).
        centered, capturable, differentiable: torch.optim's arguments; only False is accepted.
        foreach: use foreach kernels (default: yes, unless ``foreach=False``).
        check_finite_every: as in :class:`~lightopt.optim.SGD`.

    Example:
        >>> import torch
        >>> from lightopt.optim import RMSProp
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = RMSProp([w], lr=0.01)
        >>> (w ** 2).sum().backward()
        >>> _ = opt.step()
        >>> w.detach()  # first step: -ε·g/√((1-ρ)g²) = -ε·sign(g)/√0.1
        tensor([ 0.9684, -1.9684])
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.001,
        rho: float = 0.9,
        eps: float = 1e-6,
        momentum: float = 0.0,
        nesterov: bool = False,
        *,
        mode: str = "lookahead",
        weight_decay: float = 0.0,
        maximize: bool = False,
        eps_in_sqrt: bool = True,
        centered: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        foreach: bool | None = None,
        check_finite_every: int = _finite.DEFAULT_EVERY,
    ) -> None:
        defaults = dict(
            lr=lr,
            rho=rho,
            eps=eps,
            momentum=momentum,
            nesterov=nesterov,
            mode=mode,
            weight_decay=weight_decay,
            maximize=maximize,
            eps_in_sqrt=eps_in_sqrt,
            foreach=foreach,
        )
        _check_group({**defaults, "centered": centered, "capturable": capturable, "differentiable": differentiable})
        self.check_finite_every = _finite.check_every(check_finite_every)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)
        for key in _TORCH_ONLY:
            self.param_groups[-1].pop(key, None)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Also accepts the state of an earlier lightopt RMSProp and of ``torch.optim.RMSprop``."""
        super().__setstate__(state)
        for group in self.param_groups:
            from_torch = "alpha" in group and "rho" not in group
            if from_torch:
                group["rho"] = group.pop("alpha")
                group["eps_in_sqrt"] = False
            for key, default in (
                ("mode", "lookahead"),
                ("nesterov", False),
                ("maximize", False),
                ("eps_in_sqrt", True),
                ("foreach", None),
                ("weight_decay", 0.0),
                ("momentum", 0.0),
            ):
                group.setdefault(key, default)
            _check_group(group)
            for key in _TORCH_ONLY:
                group.pop(key, None)
            for p in group["params"]:
                s = self.state.get(p)
                if not s:
                    continue
                if isinstance(s.get("step"), torch.Tensor):
                    s["step"] = int(s["step"].item())
                buf = s.pop("momentum_buffer", None)
                if buf is not None and "velocity" not in s:
                    s["velocity"] = buf.mul(-group["lr"])  # torch's θ ← θ − lr·b: v = −lr·b

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one update. ``closure`` re-evaluates the loss; ``mode='interim'`` requires it."""
        loss = _common.evaluate_at_interim(self, closure, self._shift_to_interim)
        self._count_step(loss)
        for group in self.param_groups:
            params = _common.params_with_grad(group["params"], "RMSProp")
            if not params:
                continue
            use_velocity = group["momentum"] != 0
            grads, square_avgs, velocities = [], [], []
            for i, p in enumerate(params):
                state = self.state[p]
                if "square_avg" not in state:
                    state["step"] = 0
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if use_velocity and "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                grad, r, v = p.grad, state["square_avg"], state.get("velocity")
                if p.is_complex():  # a pair of reals, as torch: r averages re² and im² separately
                    params[i], grad, r = torch.view_as_real(p), torch.view_as_real(grad), torch.view_as_real(r)
                    v = torch.view_as_real(v) if use_velocity else None
                grads.append(grad)
                square_avgs.append(r)
                if use_velocity:
                    velocities.append(v)
            rmsprop(
                params,
                grads,
                square_avgs,
                velocities if use_velocity else None,
                lr=group["lr"],
                rho=group["rho"],
                eps=group["eps"],
                momentum=group["momentum"],
                lookahead=group["nesterov"] and group["mode"] == "lookahead",
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
                eps_in_sqrt=group["eps_in_sqrt"],
                foreach=group["foreach"] is not False,
            )
        self._after_update()
        return loss

    def _shift_to_interim(self, groups: list[dict[str, Any]], sign: float) -> None:
        # Algorithm 8.6, line "θ̃ ← θ + αv".
        for group in groups:
            for p in group["params"]:
                velocity = self.state.get(p, {}).get("velocity")
                if velocity is not None:
                    p.add_(velocity, alpha=sign * group["momentum"])


def rmsprop(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    square_avgs: list[torch.Tensor],
    velocities: list[torch.Tensor] | None,
    *,
    lr: float,
    rho: float,
    eps: float,
    momentum: float,
    lookahead: bool,
    weight_decay: float,
    maximize: bool = False,
    eps_in_sqrt: bool = True,
    foreach: bool,
) -> None:
    """Functional kernel of :class:`RMSProp` (Algorithms 8.5 and 8.6), in place.

    ``velocities`` is None without momentum. ``lookahead`` applies the Nesterov change of
    variables φ = θ + αv: φ ← φ + α v_new − ε g/√(δ + r). ``maximize`` replaces g by −g;
    ``eps_in_sqrt=False`` divides by √r + δ instead (torch's placement). Real tensors only (view a
    complex parameter and its state with ``torch.view_as_real``).
    """
    if foreach:
        lists = [params, grads, square_avgs] + ([velocities] if velocities is not None else [])
        for chunk in _common.group_by_device_and_dtype(*lists):
            p, g, r = chunk[0], chunk[1], chunk[2]
            v = chunk[3] if velocities is not None else None
            _rmsprop_foreach(p, g, r, v, lr, rho, eps, momentum, lookahead, weight_decay, maximize, eps_in_sqrt)
    else:
        for i, (p, g, r) in enumerate(zip(params, grads, square_avgs)):
            v = velocities[i] if velocities is not None else None
            _rmsprop_single(p, g, r, v, lr, rho, eps, momentum, lookahead, weight_decay, maximize, eps_in_sqrt)


def _rmsprop_single(p, g, r, v, lr, rho, eps, momentum, lookahead, weight_decay, maximize, eps_in_sqrt) -> None:
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g.add(p, alpha=weight_decay)
    r.mul_(rho).addcmul_(g, g, value=1 - rho)  # r ← ρr + (1 − ρ) g⊙g
    denom = r.add(eps).sqrt_() if eps_in_sqrt else r.sqrt().add_(eps)  # √(δ + r)  (torch: √r + δ)
    if v is None:
        p.addcdiv_(g, denom, value=-lr)  # θ ← θ − ε g/√(δ + r)
        return
    v.mul_(momentum).addcdiv_(g, denom, value=-lr)  # v ← αv − ε g/√(δ + r)
    if lookahead:
        p.add_(v, alpha=momentum).addcdiv_(g, denom, value=-lr)  # φ ← φ + αv − ε g/√(δ + r)
    else:
        p.add_(v)  # θ ← θ + v


def _rmsprop_foreach(p, g, r, v, lr, rho, eps, momentum, lookahead, weight_decay, maximize, eps_in_sqrt) -> None:
    if maximize:
        g = torch._foreach_neg(g)
    if weight_decay != 0:
        g = torch._foreach_add(g, p, alpha=weight_decay)
    torch._foreach_mul_(r, rho)
    torch._foreach_addcmul_(r, g, g, value=1 - rho)
    if eps_in_sqrt:
        denom = torch._foreach_add(r, eps)
        torch._foreach_sqrt_(denom)
    else:
        denom = torch._foreach_sqrt(r)
        torch._foreach_add_(denom, eps)
    if v is None:
        torch._foreach_addcdiv_(p, g, denom, value=-lr)
        return
    torch._foreach_mul_(v, momentum)
    torch._foreach_addcdiv_(v, g, denom, value=-lr)
    if lookahead:
        torch._foreach_add_(p, v, alpha=momentum)
        torch._foreach_addcdiv_(p, g, denom, value=-lr)
    else:
        torch._foreach_add_(p, v)


def _check_group(group: dict[str, Any]) -> None:
    """The checks of one param group (the defaults, a group added later, a group loaded from a state dict)."""
    _common.check_lr(group["lr"])
    _common.check_unit("rho", group["rho"])
    _common.check_eps(group["eps"])
    _common.check_unit("momentum", group["momentum"])
    _common.check_momentum_options(group["momentum"], group["nesterov"], group["mode"])
    _common.check_weight_decay(group["weight_decay"])
    check_bool("maximize", group["maximize"])
    check_bool("eps_in_sqrt", group["eps_in_sqrt"])
    _common.check_refused(
        "RMSProp (Algorithms 8.5, 8.6)",
        group,
        "centered",
        False,
        "Centered RMSProp (Graves 2013) divides by an estimate of the variance; "
        "use torch.optim.RMSprop(centered=True).",
    )
    _common.check_refused(
        "RMSProp",
        group,
        "capturable",
        False,
        "CUDA-graph capture is torch.optim's; use torch.optim.RMSprop(capturable=True).",
    )
    _common.check_refused("RMSProp", group, "differentiable", False, _common.DIFFERENTIABLE_ADVICE)
