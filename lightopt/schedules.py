"""Learning-rate and momentum schedules of §8.3: eq. 8.14 (Algorithm 8.1) and a rising α (§8.3.2).

Every schedule here is a ``torch.optim.lr_scheduler.LRScheduler``, so Lightning's
``configure_optimizers``, LightningCLI (``class_path`` + ``init_args``) and
``LearningRateMonitor`` take it unchanged. Each class has ``interval = "step"``: it counts optimizer
steps, and lightopt's ``configure_optimizers`` mixin reads the attribute to step it per step (in a
hand-written ``configure_optimizers``, say ``"interval": "step"``).

===================  =============================================  =====================
name                 book                                           steps
===================  =============================================  =====================
LinearDecay          eq. 8.14, Algorithm 8.1 (§8.3.1)               optimizer steps
tau_from_passes      τ = "a few hundred passes" (§8.3.1)            --
WarmupThen           linear warmup, then any torch or lightopt one  optimizer steps
MomentumSchedule     α "begins with a small value and is later      optimizer steps
                     raised" (§8.3.2)
===================  =============================================  =====================
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LinearLR, LRScheduler, ReduceLROnPlateau, SequentialLR

from lightopt._validation import check_bool, check_int, check_range

__all__ = ["LinearDecay", "tau_from_passes", "WarmupThen", "MomentumSchedule"]


def _linear_decay(initial_lr: float, step: int, tau: int, final_ratio: float) -> float:
    """Eq. 8.14 as a pure function of the step ``k``."""
    alpha = min(step, tau) / tau  # (1) α = k/τ, held at 1 after τ ("leave ε constant")
    final_lr = final_ratio * initial_lr  # (2) ε_τ = final_ratio · ε₀
    return (1.0 - alpha) * initial_lr + alpha * final_lr  # (3) ε_k = (1 − α)ε₀ + αε_τ


class LinearDecay(LRScheduler):
    r"""Linear learning-rate decay of Algorithm 8.1, eq. 8.14 (§8.3.1).

    .. math::
        \epsilon_k = (1 - \alpha)\,\epsilon_0 + \alpha\,\epsilon_\tau,
        \qquad \alpha = \min(k, \tau)/\tau,
        \qquad \epsilon_\tau = \texttt{final\_ratio}\cdot\epsilon_0

    ==========  ==================  ===========================================
    book        argument            meaning
    ==========  ==================  ===========================================
    k           ``last_epoch``      optimizer steps taken (``interval="step"``)
    τ           ``tau``             step at which the decay ends
    ε₀          group's ``lr``      learning rate at k = 0, per param group
    ε_τ         ``final_ratio``·ε₀  learning rate from step τ on
    ==========  ==================  ===========================================

    After step τ the learning rate stays at ε_τ, as the book advises ("it is common to leave ε
    constant"). The book's advice for the parameters: set τ to "the number of iterations required
    to make a few hundred passes through the training set" (:func:`tau_from_passes`); set ε_τ to
    "roughly 1 percent" of ε₀ (the default ``final_ratio=0.01``); choose ε₀ by watching the first
    ~100 iterations and taking a learning rate "higher than the best-performing learning rate at
    this time, but not so high that it causes severe instability".

    ``final_ratio=0`` is rejected: from step τ on every update would be zero, wasted steps that
    also break Σε_k = ∞ (eq. 8.12). For a decay to zero at the end of training use
    ``torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters)``.

    Differences from ``torch.optim.lr_scheduler.LinearLR``:
        * ``LinearDecay(opt, tau, r)`` gives the same values as
          ``LinearLR(opt, start_factor=1.0, end_factor=r, total_iters=tau)`` stepped once per
          optimizer step (up to rounding: LinearLR updates recursively, this class evaluates eq.
          8.14 directly, so one formula serves ``get_lr`` and the closed form).
        * The arguments are the book's: τ and ε_τ/ε₀, with the book's 1% as default.
        * The value depends only on k and ε₀: a change made to ``lr`` by something else is
          overwritten at the next step, so chain it with :class:`WarmupThen` (or ``SequentialLR``),
          not with ``ChainedScheduler``.

    Args:
        optimizer: the optimizer whose param groups' ``lr`` it sets.
        tau: τ, an integer >= 1, in optimizer steps.
        final_ratio: ε_τ/ε₀ in (0, 1].
        last_epoch: torch's resume index; leave at -1 and resume with ``load_state_dict``.

    Example:
        >>> import torch
        >>> from lightopt.optim import SGD
        >>> opt = SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> sched = LinearDecay(opt, tau=4, final_ratio=0.01)
        >>> lrs = []
        >>> for _ in range(6):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
        ...     opt.step()
        ...     sched.step()
        >>> lrs
        [0.1, 0.07525, 0.0505, 0.02575, 0.001, 0.001]
    """

    interval = "step"

    def __init__(self, optimizer: Optimizer, tau: int, final_ratio: float = 0.01, last_epoch: int = -1) -> None:
        self.tau = check_int("tau", tau, low=1)
        self.final_ratio = _check_final_ratio(final_ratio)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """ε_k for each param group at ``k = last_epoch`` (eq. 8.14)."""
        return [_linear_decay(lr0, self.last_epoch, self.tau, self.final_ratio) for lr0 in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        # torch calls this for ``step(epoch)`` and SequentialLR at a milestone: the same formula.
        return self.get_lr()


def _check_final_ratio(final_ratio: Any) -> float:
    if final_ratio == 0 and not isinstance(final_ratio, bool):
        raise ValueError(
            "`final_ratio` must be in (0, 1], but got final_ratio=0: the learning rate would stay 0 after "
            "step tau. For a decay to zero use torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters)."
        )
    return check_range("final_ratio", final_ratio, 0.0, 1.0, low_inclusive=False)


def tau_from_passes(steps_per_epoch: int, passes: float = 200) -> int:
    """τ for :class:`LinearDecay`: optimizer steps in ``passes`` passes through the training set.

    The book (§8.3.1): "τ may be set to the number of iterations required to make a few hundred
    passes through the training set". One pass is one epoch; ``steps_per_epoch`` counts optimizer
    steps, i.e. ``ceil(len(train_dataloader) / accumulate_grad_batches)``. Inside
    ``configure_optimizers``, ``self.trainer.estimated_stepping_batches // self.trainer.max_epochs``
    gives it for a run bounded by ``max_epochs``.

    Args:
        steps_per_epoch: optimizer steps per pass, an integer >= 1.
        passes: passes through the training set, > 0 (default 200, "a few hundred").

    Returns:
        ``round(passes * steps_per_epoch)``, at least 1.

    Example:
        >>> tau_from_passes(steps_per_epoch=390)
        78000
        >>> tau_from_passes(390, passes=300)
        117000
    """
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, low=1)
    passes = check_range("passes", passes, 0.0, low_inclusive=False)
    if math.isinf(passes):
        raise ValueError(f"`passes` must be finite, but got passes={passes}.")
    return max(1, round(passes * steps_per_epoch))


class WarmupThen(SequentialLR):
    """Linear warmup over ``warmup_steps`` optimizer steps, then the schedule ``after``.

    Not in the book, which starts at ε₀ (a warmup is common with large ε₀, batch normalization
    or Adam). For step ``k`` and each param group's initial ε₀:

    1. ``k < warmup_steps``: ``ε₀·(s + (1 − s)·k/warmup_steps)`` with ``s = start_factor``
       (torch's ``LinearLR``);
    2. ``k >= warmup_steps``: ``after``'s value at step ``k − warmup_steps``, as if it had started
       from ε₀ at the end of the warmup (so :class:`LinearDecay`'s τ counts from there).

    It is torch's ``SequentialLR`` over torch's ``LinearLR`` and the scheduler ``after`` builds,
    so any torch or lightopt schedule follows unchanged (``StepLR``, ``ExponentialLR``,
    ``CosineAnnealingLR``, :class:`LinearDecay`, ...); ``after``'s arguments count optimizer steps.
    ``state_dict`` holds both schedulers' states.

    ``after`` is a callable that takes the optimizer and returns the scheduler: a scheduler class,
    ``functools.partial(CosineAnnealingLR, T_max=1000)`` or a lambda. LightningCLI builds that
    callable from a ``class_path``/``init_args`` block in YAML::

        lr_scheduler:
          class_path: lightopt.schedules.WarmupThen
          init_args:
            warmup_steps: 500
            after:
              class_path: torch.optim.lr_scheduler.CosineAnnealingLR
              init_args: {T_max: 10000}

    ``ReduceLROnPlateau`` is rejected: its ``step`` needs the monitored metric, so it cannot run
    inside a step-indexed chain. Return it beside a warmup instead (see the error message).

    Args:
        optimizer: the optimizer whose param groups' ``lr`` it sets.
        warmup_steps: an integer >= 0; 0 runs ``after`` alone.
        after: ``Callable[[Optimizer], LRScheduler]``, the schedule after the warmup.
        start_factor: s in (0, 1], the warmup's first learning rate as a fraction of ε₀.

    Example:
        >>> import functools, torch
        >>> from torch.optim.lr_scheduler import StepLR
        >>> from lightopt.optim import SGD
        >>> opt = SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = WarmupThen(opt, warmup_steps=2, after=functools.partial(StepLR, step_size=2, gamma=0.5),
        ...                    start_factor=0.5)
        >>> lrs = []
        >>> for _ in range(7):
        ...     lrs.append(opt.param_groups[0]["lr"])
        ...     opt.step()
        ...     sched.step()
        >>> lrs
        [0.5, 0.75, 1.0, 1.0, 0.5, 0.5, 0.25]
    """

    interval = "step"

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        after: Callable[[Optimizer], LRScheduler],
        start_factor: float = 0.01,
    ) -> None:
        warmup_steps = check_int("warmup_steps", warmup_steps, low=0)
        start_factor = check_range("start_factor", start_factor, 0.0, 1.0, low_inclusive=False)
        _check_after_factory(after)
        schedulers = [_build_after(after, optimizer, warmup_steps, start_factor)]  # checked before the warmup
        if warmup_steps > 0:
            schedulers.insert(0, LinearLR(optimizer, start_factor, 1.0, total_iters=warmup_steps))
        self.warmup_steps = warmup_steps
        self.start_factor = start_factor
        super().__init__(optimizer, schedulers, milestones=[warmup_steps] if warmup_steps > 0 else [])


def _check_after_factory(after: Any) -> None:
    how = "e.g. after=functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=1000)"
    if isinstance(after, (Mapping, LRScheduler)) or not callable(after):
        what = "an instance" if isinstance(after, LRScheduler) else "a value"
        raise TypeError(
            "`after` must be a callable that takes the optimizer and returns a scheduler, "
            f"{how}; in a LightningCLI YAML give `class_path` and `init_args`, but got {what} "
            f"after={after!r} ({type(after).__name__})."
        )


def _build_after(after: Callable[[Optimizer], Any], optimizer: Optimizer, warmup_steps: int, start_factor: float):
    scheduler = after(optimizer)
    if isinstance(scheduler, ReduceLROnPlateau):
        raise ValueError(
            "`after` must build a step-indexed scheduler, but got ReduceLROnPlateau, whose step() needs the "
            "monitored metric. In configure_optimizers return the warmup and the plateau schedule side by side: "
            f"([optimizer], [{{'scheduler': LinearLR(optimizer, {start_factor!r}, 1.0, total_iters={warmup_steps}), "
            "'interval': 'step'}, {'scheduler': ReduceLROnPlateau(optimizer), 'monitor': 'val_loss'}])."
        )
    if not isinstance(scheduler, LRScheduler):
        raise TypeError(
            "`after` must return a torch.optim.lr_scheduler.LRScheduler, but it returned "
            f"{scheduler!r} ({type(scheduler).__name__})."
        )
    if scheduler.optimizer is not optimizer:
        raise ValueError("`after` must build its scheduler on the optimizer it is given, but it used another one.")
    return scheduler


def _momentum_at(step: int, milestones: Sequence[int], values: Sequence[float], ramp: bool) -> float:
    """α at optimizer step ``step``: a pure function of the step."""
    i = bisect_right(milestones, step)  # (1) milestones reached so far
    if not ramp or i == len(milestones):
        return values[i]  # (2) held at values[i] until the next milestone, and after the last
    start = milestones[i - 1] if i > 0 else 0  # (3) ramp: linear from (start, values[i]) ...
    fraction = (step - start) / (milestones[i] - start)  # ... to (milestones[i], values[i + 1])
    return values[i] + fraction * (values[i + 1] - values[i])


class MomentumSchedule(LRScheduler):
    """Momentum α as a function of the optimizer step (§8.3.2): "it begins with a small value and is
    later raised", e.g. 0.5 → 0.9 → 0.99.

    ``values[0]`` holds until ``milestones[0]``, ``values[i]`` from ``milestones[i - 1]`` on; with
    ``ramp=True`` α instead rises linearly from ``values[i]`` to ``values[i + 1]`` between
    consecutive milestones (from step 0 to ``milestones[0]`` first) and holds the last value. The
    values need not increase. Every param group gets the same α.

    Where α goes, per param group:
        * ``param_group["momentum"]`` for ``lightopt.optim.SGD`` and ``RMSProp``,
          ``torch.optim.SGD`` and ``torch.optim.RMSprop`` (any optimizer whose ``defaults`` hold
          ``momentum``);
        * ``param_group["betas"][0]``, i.e. ρ1, for ``lightopt.optim.Adam`` and torch's Adam
          family (``defaults`` hold ``betas``; checked first, as ``LearningRateMonitor`` does).
          Adam's bias correction ``1 − ρ1^t`` then uses the current ρ1.
    An optimizer with neither is a ``TypeError``.

    It is an ``LRScheduler`` whose learning rates pass through unchanged, so Lightning steps it
    like any scheduler and ``LearningRateMonitor(log_momentum=True)`` logs α. Return it beside a
    learning-rate schedule, e.g. ``([opt], [{"scheduler": LinearDecay(...), "interval": "step"},
    {"scheduler": MomentumSchedule(...), "interval": "step"}])``. α is set inside ``get_lr`` (as
    torch's ``OneCycleLR`` sets momentum), so ``step``, ``SequentialLR`` and ``ChainedScheduler``
    all set it, and ``state_dict`` resumes it exactly.

    ``lightopt.optim.SGD`` with Nesterov momentum in look-ahead mode applies a changed α from the
    next step's look-ahead point (see its docstring). ``torch.optim.RMSprop`` makes its momentum
    buffer only if momentum > 0 at its first step, so a schedule starting at 0 is rejected there;
    ``lightopt.optim.RMSProp`` has no such limit.

    Args:
        optimizer: the optimizer whose momentum it sets.
        milestones: strictly increasing optimizer steps >= 1.
        values: α in [0, 1) for each phase: one more than ``milestones``.
        ramp: rise linearly between milestones instead of jumping at them.
        last_epoch: torch's resume index; leave at -1 and resume with ``load_state_dict``.

    Example:
        >>> import torch
        >>> from lightopt.optim import SGD
        >>> opt = SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> sched = MomentumSchedule(opt, milestones=[2, 4], values=[0.5, 0.9, 0.99])
        >>> alphas = []
        >>> for _ in range(5):
        ...     alphas.append(opt.param_groups[0]["momentum"])
        ...     opt.step()
        ...     sched.step()
        >>> alphas
        [0.5, 0.5, 0.9, 0.9, 0.99]
    """

    interval = "step"

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Sequence[int],
        values: Sequence[float],
        ramp: bool = False,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"`optimizer` must be a torch.optim.Optimizer, but got {type(optimizer).__name__}.")
        self.milestones = _check_milestones(milestones)
        self.values = _check_values(values, len(self.milestones))
        self.ramp = check_bool("ramp", ramp)
        self.use_betas = "betas" in optimizer.defaults
        if not self.use_betas and "momentum" not in optimizer.defaults:
            raise TypeError(
                f"`optimizer` must have `momentum` (SGD, RMSProp) or `betas` (Adam) in its param groups, but got "
                f"{type(optimizer).__name__}, which has neither; use any of the following: lightopt.optim.SGD, "
                "lightopt.optim.RMSProp, lightopt.optim.Adam, torch.optim.SGD, torch.optim.RMSprop, torch.optim.Adam."
            )
        _check_optimizer_accepts(optimizer, self.values)
        self._last_momentum: list[float] = []
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | torch.Tensor]:
        """Set α for step ``last_epoch`` in every param group; return the learning rates unchanged."""
        momentum = _momentum_at(self.last_epoch, self.milestones, self.values, self.ramp)
        for group in self.optimizer.param_groups:
            if self.use_betas:
                beta1 = group["betas"][0]
                if isinstance(beta1, torch.Tensor):
                    beta1.fill_(momentum)
                else:
                    group["betas"] = (momentum, *group["betas"][1:])
            else:
                group["momentum"] = momentum
        self._last_momentum = [momentum] * len(self.optimizer.param_groups)
        return [g["lr"].clone() if isinstance(g["lr"], torch.Tensor) else g["lr"] for g in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float | torch.Tensor]:
        return self.get_lr()

    def get_last_momentum(self) -> list[float]:
        """α set at the last step, one per param group."""
        return list(self._last_momentum)


def _check_milestones(milestones: Any) -> list[int]:
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise TypeError(f"`milestones` must be a list of integers, but got milestones={milestones!r}.")
    checked = [check_int(f"milestones[{i}]", m, low=1) for i, m in enumerate(milestones)]
    if any(b <= a for a, b in itertools.pairwise(checked)):
        raise ValueError(f"`milestones` must be strictly increasing, but got milestones={checked}.")
    return checked


def _check_values(values: Any, n_milestones: int) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"`values` must be a list of momentum values, but got values={values!r}.")
    if len(values) != n_milestones + 1:
        raise ValueError(
            "`values` must have one more entry than `milestones` (the value before the first milestone, then "
            f"one per milestone), but got {len(values)} values for {n_milestones} milestones."
        )
    return [check_range(f"values[{i}]", v, 0.0, 1.0, high_inclusive=False) for i, v in enumerate(values)]


def _check_optimizer_accepts(optimizer: Optimizer, values: list[float]) -> None:
    if 0.0 in values and any(group.get("nesterov", False) for group in optimizer.param_groups):
        raise ValueError(
            f"`values` must be in (0, 1) with nesterov=True, which needs momentum, but got values={values}. "
            "Start from a value > 0, e.g. 0.5, or use nesterov=False."
        )
    if isinstance(optimizer, torch.optim.RMSprop) and values[0] == 0.0 and any(values):
        raise ValueError(
            "`values[0]` must be > 0 for torch.optim.RMSprop, but got values[0]=0.0: torch.optim.RMSprop "
            "makes its momentum buffer only when momentum > 0 at its first step, so momentum cannot rise "
            "from 0 later. Start from a value > 0, e.g. 0.5, or use lightopt.optim.RMSProp."
        )
