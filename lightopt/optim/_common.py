"""Helpers shared by lightopt's first-order optimizers: argument checks and tensor grouping."""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lightopt._validation import check_bool, check_choice, check_range

MODES = ("lookahead", "interim")


def check_lr(lr: Any) -> float:
    if isinstance(lr, torch.Tensor):
        raise TypeError(
            f"`lr` must be a real number, but got a tensor, lr={lr!r}. lightopt reads `lr` as a Python float every "
            "step (torch.optim's tensor lr serves CUDA-graph capture, which lightopt's optimizers do not offer); "
            "pass float(lr)."
        )
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


def check_refused(name: str, group: dict[str, Any], key: str, neutral: Any, advice: str) -> None:
    """A torch.optim option the book's algorithm has no place for: only its neutral value is accepted."""
    value = group.get(key, neutral)
    if isinstance(value, torch.Tensor) or value != neutral:
        raise ValueError(f"{name} has no `{key}`: it must be {neutral!r}, but got {key}={value!r}. {advice}")


def restore_checked(optimizer: Any, fused_devices: Any, check_group: Any) -> None:
    """After ``Optimizer.__setstate__``: the kernel-path chooser, each group checked, fused step counters moved."""
    optimizer.__dict__.setdefault("_paths", PathChooser(fused_devices))
    for group in optimizer.param_groups:
        check_group(group)
    move_fused_steps(optimizer)


def check_paths(group: dict[str, Any]) -> None:
    """``foreach`` and ``fused`` choose one kernel path: both True is a contradiction."""
    if group.get("foreach") and group.get("fused"):
        raise ValueError("`foreach` and `fused` cannot both be True; choose one.")


DIFFERENTIABLE_ADVICE = (
    "lightopt's optimizers update the parameters in place under torch.no_grad(); to differentiate through "
    "optimizer steps use the torch.optim class with differentiable=True."
)


def sparse_gradient_error(name: str) -> TypeError:
    return TypeError(
        f"{name} does not support sparse gradients (neither does torch.optim's); use dense gradients "
        "(e.g. torch.nn.Embedding(..., sparse=False)), or lightopt.optim.SGD or AdaGrad, which support them."
    )


def params_with_grad(params: Sequence[torch.Tensor], optimizer_name: str) -> list[torch.Tensor]:
    found = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise sparse_gradient_error(optimizer_name)
        found.append(p)
    return found


# Devices whose fused kernels lightopt has checked against the for-loop (agreement to rounding).
FUSED_DEVICES = ("cpu", "cuda")


class PathChooser:
    """The kernel path of each param group when ``foreach`` and ``fused`` are both left unset.

    The fastest exact path: ``"fused"`` where torch has a fused kernel for the optimizer on the
    parameters' device (``fused_devices``) and every parameter is real floating point, else
    ``"foreach"``, else (sparse gradients) ``"loop"``. An explicit ``foreach``/``fused`` always wins.
    The scan of a group's parameters runs when the group is first stepped and again only when
    its parameter list, the first parameter's dtype or its device type changes, so the choice
    costs a dictionary look-up per group and step.
    """

    def __init__(self, fused_devices: Sequence[str]) -> None:
        self.fused_devices = tuple(fused_devices)
        self._cache: dict[int, tuple[list[torch.Tensor], int, torch.dtype, bool, str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"fused_devices": self.fused_devices, "_cache": {}}

    def path(self, group: dict[str, Any], has_sparse_grad: bool = False) -> str:
        foreach, fused = group.get("foreach"), group.get("fused")
        if fused:
            return "fused"
        if foreach:
            return "foreach"
        if has_sparse_grad or foreach is False:
            return "loop"
        params = group["params"]
        if not params:
            return "loop"
        first = params[0]
        key = id(group)
        cached = self._cache.get(key)
        if (
            cached is None
            or cached[0] is not params
            or cached[1] != len(params)
            or cached[2] != first.dtype
            or cached[3] != first.is_cuda
        ):
            cached = (params, len(params), first.dtype, first.is_cuda, self._scan(params))
            self._cache[key] = cached
        chosen = cached[4]
        if chosen == "fused" and fused is False:
            return "foreach"
        return chosen

    def _scan(self, params: Sequence[torch.Tensor]) -> str:
        devices = {p.device.type for p in params}
        if len(devices) == 1 and devices <= set(self.fused_devices) and all(p.is_floating_point() for p in params):
            return "fused"
        return "foreach"


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


def unhooked_step(cls: type[torch.optim.Optimizer]) -> Callable[..., Any]:
    """``cls.step`` without torch's wrappers (step hooks, grad mode), to call from a subclass's own ``step``.

    torch wraps an optimizer class's ``step`` with the step pre/post hooks the first time the class
    is instantiated; calling the wrapped parent from a subclass's (wrapped) ``step`` would run each
    hook twice. The subclass's ``step`` runs under ``torch.no_grad()`` itself.
    """
    return inspect.unwrap(cls.step)


def run_with_paths(
    optimizer: torch.optim.Optimizer, paths: PathChooser, torch_step: Callable[..., Any], has_sparse: Sequence[bool]
) -> None:
    """Run a torch optimizer's ``step`` with each unset group's ``foreach``/``fused`` set to the chosen path."""
    chosen = []
    for group, sparse in zip(optimizer.param_groups, has_sparse):
        if group["foreach"] is None and group["fused"] is None:
            path = paths.path(group, sparse)
            group["foreach"], group["fused"] = path == "foreach", path == "fused"
            chosen.append(group)
    try:
        torch_step(optimizer)
    finally:
        for group in chosen:
            group["foreach"] = group["fused"] = None


def move_fused_steps(optimizer: torch.optim.Optimizer) -> None:
    """After a load: put the ``step`` counters of groups that may run fused where torch's fused kernels want them.

    torch moves them to the parameter's device as float32 only for groups saved with
    ``fused=True``; a group whose path is chosen per step (``foreach``/``fused`` unset) needs it too.
    """
    for group in optimizer.param_groups:
        if group.get("foreach") or group.get("fused") is False:
            continue
        for p in group["params"]:
            state = optimizer.state.get(p)
            step = state.get("step") if state else None
            if isinstance(step, torch.Tensor) and (step.device != p.device or step.dtype != torch.float32):
                state["step"] = step.to(device=p.device, dtype=torch.float32)
