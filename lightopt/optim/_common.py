"""Helpers shared by lightopt's first-order optimizers: argument checks and tensor grouping."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lightopt._validation import check_bool, check_choice, check_range

MODES = ("lookahead", "interim")


def check_lr(lr: Any) -> float:
    return check_range("lr", lr, 0.0)


def check_eps(eps: Any) -> float:
    return check_range("eps", eps, 0.0, low_inclusive=False)


def check_unit(name: str, value: Any) -> float:
    """A decay or momentum coefficient: in [0, 1)."""
    return check_range(name, value, 0.0, 1.0, high_inclusive=False)


def check_weight_decay(weight_decay: Any) -> float:
    return check_range("weight_decay", weight_decay, 0.0)


def check_momentum_options(momentum: float, nesterov: Any, mode: Any) -> None:
    check_bool("nesterov", nesterov)
    check_choice("mode", mode, MODES)
    if nesterov and momentum == 0:
        raise ValueError(
            "`nesterov=True` needs momentum, but got momentum=0. Set `momentum` in (0, 1), e.g. momentum=0.9, "
            "or use nesterov=False."
        )


def params_with_grad(params: Sequence[torch.Tensor], optimizer_name: str) -> list[torch.Tensor]:
    found = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise TypeError(f"{optimizer_name} does not support sparse gradients; use dense parameters.")
        found.append(p)
    return found


def group_by_device_and_dtype(*tensor_lists: Sequence[torch.Tensor]) -> list[tuple[list[torch.Tensor], ...]]:
    """Split parallel tensor lists so that each chunk shares one device and dtype (the foreach kernels need it)."""
    buckets: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], ...]] = defaultdict(
        lambda: tuple([] for _ in tensor_lists)
    )
    for items in zip(*tensor_lists):
        key = (items[0].device, items[0].dtype)
        for bucket, item in zip(buckets[key], items):
            bucket.append(item)
    return list(buckets.values())


def default_foreach(params: Sequence[torch.Tensor]) -> bool:
    """torch.optim's default: foreach on CUDA tensors, the per-tensor loop elsewhere."""
    return bool(params) and all(p.is_cuda for p in params)


def missing_closure_error(name: str) -> ValueError:
    return ValueError(
        f"{name}(nesterov=True, mode='interim') evaluates the gradient at the interim point theta + alpha*v and "
        "needs the closure that recomputes the loss: call optimizer.step(closure) (Lightning's automatic "
        "optimization does). Under 16-bit mixed precision Lightning calls step() without a closure: use "
        "mode='lookahead' there, which is exact and needs none."
    )


def evaluate_at_interim(
    optimizer: torch.optim.Optimizer,
    closure: Callable[[], Any] | None,
    shift: Callable[[list[dict[str, Any]], float], None],
) -> Any:
    """Evaluate ``closure``; for groups with Nesterov ``mode='interim'``, at the interim point θ + αv.

    ``shift(groups, sign)`` moves those groups' parameters by ``sign·αv`` (Algorithms 8.3 and 8.6,
    line "θ̃ ← θ + αv"); they are moved back even when the closure raises.
    """
    interim = [g for g in optimizer.param_groups if g["nesterov"] and g["mode"] == "interim"]
    if not interim:
        return evaluate_closure(closure)
    if closure is None:
        raise missing_closure_error(type(optimizer).__name__)
    shift(interim, 1.0)
    try:
        return evaluate_closure(closure)
    finally:
        shift(interim, -1.0)


def evaluate_closure(closure: Callable[[], Any] | None) -> Any:
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()
