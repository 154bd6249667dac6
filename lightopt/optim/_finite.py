"""Non-finite losses, gradients and steps: every lightopt optimizer raises instead of going on with NaN.

**Second-order optimizers** (Newton, ConjugateGradient, BFGS, LBFGS, NaturalGradient) read the
loss and the gradient on the host every iteration anyway, so they check the loss, the gradient and
the step of every iteration, at no extra synchronization.

**First-order optimizers** (SGD, AdaGrad, RMSProp, Adam) run fused or foreach kernels that never
read a value back to the host; a check of every element of every gradient would be one more pass
over all parameters per step (on the CPU about as long as a fused SGD step itself) and, on a GPU,
a host synchronization per step. So their default check is the cheap one, with
``check_finite_every=N`` (default 100):

* the loss returned by ``step(closure)`` is checked every step when it lives on the CPU (one
  scalar comparison, no pass over the parameters); on an accelerator it is checked on the steps
  that check the parameters, so no step adds a host synchronization;
* the parameters are checked after the first step and after every N-th: one reduction over all
  of them and one host synchronization every N steps. A non-finite gradient or step ends in the
  parameters, so it is caught at most N steps later, and the error names the steps between the
  last check that passed and this one;
* ``check_finite_every=1`` checks the loss and every gradient *before* each update (an error then
  leaves the parameters as they were) and the parameters after it: one more pass per step;
* ``check_finite_every=0`` turns every check off (for runs that allow NaN on purpose).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from lightopt._validation import check_int

DEFAULT_EVERY = 100


class NonFiniteError(ValueError):
    """A loss, gradient, step or parameter of a lightopt optimizer is NaN or infinite."""


def check_every(value: Any) -> int:
    return check_int("check_finite_every", value, 0)


def _describe(value: torch.Tensor | float) -> str:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        bad = value[~torch.isfinite(value)] if value.dim() else value
        first = bad.reshape(-1)[0].item() if bad.numel() else value.reshape(-1)[0].item()
        return f"{first} in {int((~torch.isfinite(value)).sum())} of {value.numel()} entries"
    return str(value)


def loss_value(loss: Any) -> float | None:
    """The loss as a float when reading it costs no host synchronization (a CPU tensor or a number), else None."""
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1 or loss.device.type != "cpu":
            return None
        return float(loss.detach())
    if isinstance(loss, (int, float)):
        return float(loss)
    return None


def first_nonfinite(tensors: Sequence[torch.Tensor]) -> int | None:
    """Index of the first tensor with a NaN or infinite entry, or None: one reduction per device and dtype."""
    dense = [(i, t.coalesce().values() if t.is_sparse else t) for i, t in enumerate(tensors)]
    dense = [(i, t) for i, t in dense if t.numel() > 0]
    buckets: dict[tuple[torch.device, torch.dtype], list[tuple[int, torch.Tensor]]] = {}
    for i, t in dense:
        buckets.setdefault((t.device, t.dtype), []).append((i, t))
    for items in buckets.values():
        # The 2-norm per tensor is one fast vectorized pass; NaN and ±inf survive it. It can also
        # overflow on huge finite values, so a flagged tensor is confirmed element by element.
        norms = torch.stack(torch._foreach_norm([t for _, t in items]))
        flagged = (~torch.isfinite(norms)).nonzero().reshape(-1).tolist()
        for j in flagged:
            if not bool(torch.isfinite(items[j][1]).all()):
                return items[j][0]
    return None


def raise_nonfinite(name: str, step: int, quantity: str, value: Any, advice: str) -> None:
    raise NonFiniteError(f"{name} step {step}: {quantity} is not finite ({_describe(value)}). {advice}")


def check_tensor(name: str, step: int, quantity: str, tensor: torch.Tensor, advice: str) -> None:
    """Raise if ``tensor`` has a NaN or infinite entry (one host synchronization)."""
    if not bool(torch.isfinite(tensor).all()):
        raise_nonfinite(name, step, quantity, tensor, advice)


def check_number(name: str, step: int, quantity: str, value: float, advice: str) -> None:
    if not math.isfinite(value):
        raise_nonfinite(name, step, quantity, value, advice)


FIRST_ORDER_ADVICE = (
    "Lower `lr`, clip gradients (Trainer(gradient_clip_val=...)), or find the operation with "
    "torch.autograd.set_detect_anomaly(True); check_finite_every=0 turns this check off."
)


class FirstOrderChecks:
    """The checks of a first-order optimizer (module docstring), mixed into its class.

    ``_count_step(loss)`` runs after the closure and before the update, ``_after_update()`` after
    it. The step count starts at 1 when the optimizer is built; it is kept by ``copy``/``pickle``
    but not by ``state_dict`` (torch's format has no place for it).
    """

    check_finite_every: int = DEFAULT_EVERY
    _finite_step: int = 0
    _finite_checked: int = 0
    _finite_loss: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]
        state["check_finite_every"] = self.check_finite_every
        return state

    def _count_step(self, loss: Any) -> None:
        self._finite_step += 1
        every = self.check_finite_every
        if every == 0:
            return
        name, step = type(self).__name__, self._finite_step
        value = loss_value(loss)
        if value is not None:
            check_number(name, step, "the loss returned by the closure", value, FIRST_ORDER_ADVICE)
        elif isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._finite_loss = loss.detach()  # on an accelerator: read with the parameters
        if every == 1:
            if self._finite_loss is not None:
                self._check_pending_loss()
            params, grads = self._params_and_grads()
            bad = first_nonfinite(grads)
            if bad is not None:
                raise_nonfinite(
                    name,
                    step,
                    f"the gradient of {_where(self, params[bad])}",
                    grads[bad],
                    "The parameters were left unchanged. " + FIRST_ORDER_ADVICE,
                )

    def _after_update(self) -> None:
        every, step = self.check_finite_every, self._finite_step
        if every == 0 or (step != 1 and step % every != 0):
            return
        self._check_pending_loss()
        params = [p for group in self.param_groups for p in group["params"]]  # type: ignore[attr-defined]
        bad = first_nonfinite(params)
        if bad is not None:
            since = (
                f"step {step}" if step - self._finite_checked <= 1 else f"steps {self._finite_checked + 1} to {step}"
            )
            raise_nonfinite(
                type(self).__name__,
                step,
                f"{_where(self, params[bad])} after the update",
                params[bad],
                f"A gradient or update of {since} was not finite (the last check, after step "
                f"{self._finite_checked}, passed); check_finite_every=1 checks every gradient before its update. "
                + FIRST_ORDER_ADVICE,
            )
        self._finite_checked = step

    def _check_pending_loss(self) -> None:
        loss, self._finite_loss = self._finite_loss, None
        if loss is not None and not bool(torch.isfinite(loss).all()):
            raise_nonfinite(
                type(self).__name__, self._finite_step, "the loss returned by the closure", loss, FIRST_ORDER_ADVICE
            )

    def _params_and_grads(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]  # type: ignore[attr-defined]
        return params, [p.grad for p in params]


def _where(optimizer: Any, param: torch.Tensor) -> str:
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group["params"]):
            if p is param:
                names = group.get("param_names")
                label = f" ({names[i]!r})" if names and i < len(names) else ""
                return f"parameter {i}{label} of param group {g}, shape {list(p.shape)},"
    return "a parameter"
