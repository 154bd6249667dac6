"""SGD, momentum and Nesterov momentum: Algorithms 8.1, 8.2 and 8.3 (§8.3)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.optimizer import Optimizer
from torch.optim.sgd import sgd as _torch_sgd

from lightopt._validation import check_bool
from lightopt.optim import _common, _finite

__all__ = ["SGD"]


class SGD(_finite.FirstOrderChecks, Optimizer):
    r"""Stochastic gradient descent, Algorithms 8.1, 8.2 and 8.3 (§8.3).

    .. math::
        \begin{aligned}
        &\textbf{require: } \text{learning rate } \epsilon_k,\ \text{momentum } \alpha \in [0, 1),
            \ \theta,\ v = 0 \\
        &\textbf{loop} \\
        &\quad \tilde\theta \leftarrow \theta + \alpha v
            &&\text{(8.3 only; 8.1/8.2 use } \tilde\theta = \theta) \\
        &\quad g \leftarrow \tfrac{1}{m} \nabla_{\tilde\theta} \textstyle\sum_i L(f(x^{(i)}; \tilde\theta), y^{(i)}) \\
        &\quad v \leftarrow \alpha v - \epsilon_k g && \text{(8.1: } \alpha = 0) \\
        &\quad \theta \leftarrow \theta + v
        \end{aligned}

    ==========  ================  =====================================
    book        argument          meaning
    ==========  ================  =====================================
    ε_k         ``lr``            learning rate, read every step
    α           ``momentum``      momentum coefficient
    v           (state)           velocity, in the book's units
    θ̃           ``mode``          where the Nesterov gradient is taken
    ==========  ================  =====================================

    **Velocity in the book's units.** A learning rate that changes between steps scales only the
    new contribution ``−ε_k g``: the velocity accumulated so far keeps the step sizes it was made
    with. ``torch.optim.SGD`` keeps ``b`` with ``v = −lr·b`` and multiplies the whole of ``b`` by
    the *current* lr, so under any schedule its trajectory differs from the book's. This class
    stores torch's buffer ``b`` together with the learning rate ``ε_b`` it is expressed in, and
    rescales ``b ← b·ε_b/ε_k`` whenever the learning rate changes: an exact change of variables
    (``v = −ε_b·b``) that lets it run torch's own for-loop, foreach and fused kernels. For heavy-ball
    momentum the rescale folds into the kernel's momentum factor (``α·ε_b/ε_k``), so it costs
    nothing; with Nesterov it is one extra multiply on steps where the learning rate changed.

    **Nesterov modes.** ``mode="lookahead"`` (the default) keeps ``φ = θ + αv`` in the parameters,
    the exact change of variables ``φ ← φ + α v_{new} − ε_k g(φ)``: the gradient is taken where the
    parameters are, so no closure is needed and it works under 16-bit mixed precision (where
    Lightning calls ``step()`` without a closure). The model then holds the look-ahead point
    ``θ + αv`` (as ``torch.optim.SGD(nesterov=True)`` does); ``θ = φ − αv``. If ``momentum``
    changes between steps, the look-ahead point of step ``k + 1`` uses step ``k``'s α.
    ``mode="interim"`` keeps the book's θ in the parameters: ``step(closure)`` moves to θ + αv,
    re-evaluates the loss and gradient through ``closure`` (Lightning's automatic optimization
    passes one), moves back and applies the momentum update. It costs a second forward and
    backward pass per step, and a missing closure is an error.

    **Default kernel path.** With ``foreach`` and ``fused`` left unset, each param group runs
    torch's fused SGD kernel on CPU and CUDA floating-point parameters (it agrees with the
    for-loop to rounding, and is the fastest), torch's foreach kernels on complex parameters or
    other devices, and the for-loop when a gradient is sparse. torch.optim.SGD defaults to the
    for-loop on the CPU (2–4× slower). An explicit ``foreach``/``fused`` wins.

    **Non-finite values.** A NaN or infinite loss, gradient or update raises
    :class:`~lightopt.optim.NonFiniteError` naming the step: cheap checks by default, every
    element of every gradient with ``check_finite_every=1`` (see ``check_finite_every``).

    Differences from the book:
        * ``weight_decay`` (not in the book; regularization belongs to J there) adds ``λθ`` to g.
        * ``maximize=True`` ascends: g is replaced by −g.
        * The velocity starts at 0; the book allows any initial v.

    Differences from ``torch.optim.SGD``:
        * The learning rate scales new contributions only (above); equal trajectories when lr is
          constant.
        * ``lr`` has no default value: plain SGD has no learning rate that suits most problems
          (torch's 1e-3 is usually far too small for SGD, and the book gives none), so it must be
          given, here or in every param group (``SGD([{"params": ..., "lr": 0.1}])`` needs no
          ``lr``). A group without one is an error.
        * No ``dampening`` (the book has none; an error explains the replacement),
          ``differentiable`` or tensor ``lr``.
        * A state dict saved by ``torch.optim.SGD`` loads and continues exactly as torch would
          at a constant learning rate: torch's buffer ``b`` is kept with ``ε_b`` = the group's lr,
          i.e. ``v = −lr·b`` in the book's units. So does one saved by an earlier lightopt
          without the ``foreach``/``fused`` keys.
        * Complex parameters are stepped as pairs of reals, as torch does.

    Args:
        params: parameters or param groups; every hyperparameter below may be set per group.
        lr: ε, the learning rate (>= 0); may be left out when every param group gives its own.
        momentum: α in [0, 1); 0 gives Algorithm 8.1.
        nesterov: Algorithm 8.3 (needs ``momentum > 0``).
        mode: ``"lookahead"`` or ``"interim"``; only used with ``nesterov=True``.
        weight_decay: λ >= 0, an L2 penalty added to the gradient.
        maximize: ascend the objective instead of descending it.
        dampening: torch.optim's argument; only 0 is accepted.
        differentiable: torch.optim's argument; only False is accepted.
        foreach: use torch's foreach kernels (default: the fastest path, above).
        fused: use torch's fused kernel (CPU and CUDA floating-point tensors; default above).
        check_finite_every: check the parameters for NaN/inf after the first step and every
            N-th (and a CPU loss every step); 1 checks every gradient before its update; 0 never.

    Example:
        >>> import torch
        >>> from lightopt.optim import SGD
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = SGD([w], lr=0.1, momentum=0.9)
        >>> for _ in range(2):
        ...     opt.zero_grad()
        ...     (w ** 2).sum().backward()
        ...     _ = opt.step()
        >>> w.detach()
        tensor([ 0.4600, -0.9200])
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float | None = None,
        momentum: float = 0.0,
        nesterov: bool = False,
        *,
        mode: str = "lookahead",
        weight_decay: float = 0.0,
        maximize: bool = False,
        dampening: float = 0.0,
        differentiable: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        check_finite_every: int = _finite.DEFAULT_EVERY,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            mode=mode,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        _check_group(
            {**defaults, "lr": 0.0 if lr is None else lr, "dampening": dampening, "differentiable": differentiable}
        )
        self.check_finite_every = _finite.check_every(check_finite_every)
        self._paths = _common.PathChooser(_common.FUSED_DEVICES)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if param_group.get("lr", self.defaults["lr"]) is None:
            raise ValueError(
                "`lr` is required: pass SGD(params, lr=...), or give every param group its own, e.g. "
                "SGD([{'params': ..., 'lr': 0.1}]). (lightopt's SGD has no default learning rate; see its docstring.)"
            )
        _check_group({**self.defaults, **param_group})
        super().add_param_group(param_group)
        for key in ("dampening", "differentiable"):
            self.param_groups[-1].pop(key, None)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Also accepts the state of an earlier lightopt SGD and of ``torch.optim.SGD``."""
        super().__setstate__(state)
        self.__dict__.setdefault("_paths", _common.PathChooser(_common.FUSED_DEVICES))
        for group in self.param_groups:
            for key, default in (
                ("mode", "lookahead"),
                ("maximize", False),
                ("foreach", None),
                ("fused", None),
                ("nesterov", False),
                ("weight_decay", 0.0),
            ):
                group.setdefault(key, default)
            _check_group(group)
            for key in ("dampening", "differentiable"):
                group.pop(key, None)
            for p in group["params"]:
                # torch's buffer b is in units of the lr it will be applied with: v = −lr·b.
                s = self.state.get(p)
                if s and s.get("momentum_buffer") is not None:
                    s.setdefault("momentum_lr", group["lr"])

    def velocity(self, param: torch.Tensor) -> torch.Tensor:
        """The book's velocity ``v`` of ``param`` (zeros before its first momentum step)."""
        state = self.state.get(param, {})
        buf = state.get("momentum_buffer")
        if buf is None:
            return torch.zeros_like(param)
        return buf * (-state["momentum_lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one update. ``closure`` re-evaluates the loss; ``mode='interim'`` requires it."""
        loss = _common.evaluate_at_interim(self, closure, self._shift_to_interim)
        self._count_step(loss)
        for group in self.param_groups:
            params, has_sparse = [], False
            for p in group["params"]:
                if p.grad is not None:
                    params.append(p)
                    has_sparse = has_sparse or p.grad.is_sparse
            if params:
                self._update_group(group, params, self._paths.path(group, has_sparse))
        self._after_update()
        return loss

    def _shift_to_interim(self, groups: list[dict[str, Any]], sign: float) -> None:
        # Algorithm 8.3, line "θ̃ ← θ + αv", with v = −ε_b·b.
        for group in groups:
            for p in group["params"]:
                state = self.state.get(p, {})
                buf = state.get("momentum_buffer")
                if buf is not None:
                    p.add_(buf, alpha=-sign * group["momentum"] * state["momentum_lr"])

    def _update_group(self, group: dict[str, Any], params: list[torch.Tensor], path: str) -> None:
        lr, momentum = group["lr"], group["momentum"]
        grads = [p.grad for p in params]
        fused = path == "fused"
        kernel = dict(
            foreach=path == "foreach",
            fused=fused,
            weight_decay=group["weight_decay"],
            lr=lr,
            dampening=0.0,
            maximize=group["maximize"],
        )
        if momentum == 0:  # Algorithm 8.1: no state at all, as in torch
            _torch_sgd(params, grads, [None] * len(params), momentum=0.0, nesterov=False, **kernel)
            return
        states = [self.state[p] for p in params]
        bufs = [s.get("momentum_buffer") for s in states]
        lookahead = group["nesterov"] and group["mode"] == "lookahead"
        if lr == 0:
            self._zero_lr_step(group, params, states, lookahead)
            return
        missing = [b is None for b in bufs]
        kernel_momentum = momentum
        buffer_lrs = {s["momentum_lr"] for s, m in zip(states, missing) if not m}
        if len(buffer_lrs) == 1 and not lookahead:
            # Heavy ball: b ← (α·ε_b/ε_k)·b + g in torch's own pass is v ← αv − ε_k g in units of ε_k,
            # so a changed learning rate costs nothing extra. (Nesterov's g + αb term needs α itself.)
            kernel_momentum = momentum * buffer_lrs.pop() / lr
        else:
            _rescale_buffers(bufs, states, lr)
        if fused and any(missing) and not all(missing):
            # torch's fused kernel treats a step as first only when no buffer exists yet;
            # a parameter that gets its first gradient later starts from v = 0.
            bufs = [torch.zeros_like(p) if m else b for p, b, m in zip(params, bufs, missing)]
        _torch_sgd(params, grads, bufs, momentum=kernel_momentum, nesterov=lookahead, **kernel)
        for state, buf in zip(states, bufs):
            state["momentum_buffer"] = buf
            state["momentum_lr"] = lr

    @staticmethod
    def _zero_lr_step(group: dict[str, Any], params: list[torch.Tensor], states: list[dict], lookahead: bool) -> None:
        # ε_k = 0: v ← αv; θ ← θ + v (lookahead: φ ← φ + αv). torch's kernel cannot express it
        # (its buffer is in units of lr), so keep b in units of the previous lr ε_b.
        alpha = group["momentum"]
        for p, state in zip(params, states):
            buf = state.get("momentum_buffer")
            if buf is None:
                continue
            buf.mul_(alpha)
            p.add_(buf, alpha=-state["momentum_lr"] * (alpha if lookahead else 1.0))


def _rescale_buffers(bufs: list[torch.Tensor | None], states: list[dict], lr: float) -> None:
    """Express every buffer in units of the current lr: b ← b·ε_b/ε_k (v = −ε_b·b is unchanged)."""
    by_factor: dict[float, list[torch.Tensor]] = {}
    for buf, state in zip(bufs, states):
        if buf is not None and state["momentum_lr"] != lr:
            by_factor.setdefault(state["momentum_lr"] / lr, []).append(buf)
    for factor, group in by_factor.items():
        dense = [b for b in group if not b.is_sparse]
        if dense:
            torch._foreach_mul_(dense, factor)
        for b in group:
            if b.is_sparse:
                b.mul_(factor)


def _check_group(group: dict[str, Any]) -> None:
    """The checks of one param group (the defaults, a group added later, a group loaded from a state dict)."""
    _common.check_lr(group["lr"])
    _common.check_unit("momentum", group["momentum"])
    _common.check_momentum_options(group["momentum"], group["nesterov"], group["mode"])
    _common.check_weight_decay(group["weight_decay"])
    check_bool("maximize", group["maximize"])
    _common.check_paths(group)
    _common.check_refused(
        "SGD (Algorithms 8.1-8.3)",
        group,
        "dampening",
        0,
        "torch's dampening scales each new gradient by (1 - dampening) after the first step; for the same "
        "steady-state step scale `lr` by (1 - dampening), or keep torch.optim.SGD.",
    )
    _common.check_refused("SGD", group, "differentiable", False, _common.DIFFERENTIABLE_ADVICE)
