"""Continuation methods and curriculum learning, §8.7.6: a stochastic curriculum and a scheduled attribute."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import Sampler
from typing_extensions import override

from lightopt._validation import check_bool, check_choice, check_int, check_number, check_range

__all__ = ["Continuation", "CurriculumSampler", "StochasticCurriculum", "linear_schedule", "schedule_value"]

Schedule = Sequence[float] | Callable[[int], float]


def linear_schedule(start: float, end: float, num: int) -> list[float]:
    """``num`` values rising (or falling) linearly from ``start`` to ``end``, both included.

    A list schedule holds its last value after its end, so ``linear_schedule(0.1, 0.5, 5)`` as a
    curriculum raises the share of hard examples over five epochs and keeps it at 0.5 afterwards.

    >>> linear_schedule(0.1, 0.5, 5)
    [0.1, 0.2, 0.3, 0.4, 0.5]
    >>> linear_schedule(0.1, 0.5, 1)
    [0.5]
    """
    start, end = check_number("start", start), check_number("end", end)
    num = check_int("num", num, 1)
    if num == 1:
        return [end]
    return [(start * (num - 1 - i) + end * i) / (num - 1) for i in range(num)]  # exact at both ends


def schedule_value(schedule: Schedule, t: int) -> float:
    """The value of ``schedule`` at epoch or step ``t``: ``schedule[min(t, len − 1)]``, or ``schedule(t)``.

    >>> schedule_value([0.1, 0.2], 5), schedule_value(lambda t: t / 10, 5)
    (0.2, 0.5)
    """
    if callable(schedule):
        return check_number("schedule(t)", schedule(t))
    return float(schedule[min(t, len(schedule) - 1)])


class CurriculumSampler(Sampler[int]):
    """The indices of one epoch of a stochastic curriculum: each draw is hard with probability h_e.

    ``set_epoch(e)`` picks the epoch; the order is a pure function of ``(seed, e)``, so resuming,
    or iterating twice, gives the same indices. Each of the ``num_samples`` draws is hard with
    probability ``fraction(e)``; hard draws walk through a random permutation of the hard
    examples (starting a new one when they run out), easy draws likewise, so within an epoch an
    example repeats only when its group is exhausted. Made by :class:`StochasticCurriculum`.
    """

    def __init__(self, hard: np.ndarray, fraction: Callable[[int], float], num_samples: int, seed: int) -> None:
        self.hard_indices = np.flatnonzero(hard)
        self.easy_indices = np.flatnonzero(~hard)
        self.fraction = fraction
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self, epoch: int) -> list[int]:
        """The indices of epoch ``epoch``, in order."""
        h = self.fraction(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        is_hard = rng.random(self.num_samples) < h  # (1) each draw hard with probability h
        out = np.empty(self.num_samples, dtype=np.int64)
        for mask, pool in ((is_hard, self.hard_indices), (~is_hard, self.easy_indices)):
            count = int(mask.sum())
            if count == 0:
                continue
            if len(pool) == 0:
                group = "hard" if pool is self.hard_indices else "easy"
                raise ValueError(f"The curriculum asks for {group} examples at epoch {epoch}, but there are none.")
            rounds = -(-count // len(pool))  # (2) enough fresh permutations of the group
            out[mask] = np.concatenate([rng.permutation(pool) for _ in range(rounds)])[:count]
        return out.tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices(self.epoch))

    def __len__(self) -> int:
        return self.num_samples


class StochasticCurriculum(Callback):
    r"""Stochastic curriculum learning (Zaremba & Sutskever 2014), §8.7.6.

    .. math::
        \begin{aligned}
        &\textbf{require: } \text{hard examples } H,\ \text{easy examples } E,
            \ \text{schedule } h_0 \le h_1 \le \dots \\
        &\textbf{for each epoch } e, \textbf{ each of } N \text{ draws:} \\
        &\quad \text{with probability } h_e \text{ draw from } H, \text{ else from } E
        \end{aligned}

    The book: "always present a random mix of easy and hard examples" and "gradually increase the
    average proportion of the more difficult examples"; a deterministic curriculum (easy first,
    then hard) gave no improvement over plain training. The schedule here is the share of hard
    draws per epoch, not per step: any value in [0, 1] is allowed, and it need not increase.

    ==========  ==================  ==============================================
    book        argument            meaning
    ==========  ==================  ==============================================
    H, E        ``difficulty``      a boolean "hard" mask, or scores and ``threshold``
    h_e         ``schedule``        share of hard draws in epoch e
    N           ``num_samples``     draws per epoch (default: the data set's size)
    ==========  ==================  ==============================================

    **Wiring.** The callback owns a :class:`CurriculumSampler`, ``curriculum.sampler``; pass it to
    the training ``DataLoader`` as ``sampler=`` (not ``shuffle=True``). Before each epoch the
    callback (and Lightning itself, which calls ``set_epoch`` on samplers) sets the sampler's
    epoch, so no dataloader reload is needed. ``on_train_start`` checks that a training loader
    uses the sampler and that its data set has ``len(difficulty)`` examples. Under DDP the
    sampler must not be replaced by a ``DistributedSampler``; it is single-process.

    **Reproducibility.** Epoch e's order depends only on ``seed`` and e: the same seed gives the
    same order, and a run resumed from a checkpoint draws what an uninterrupted one would. The
    state (the epoch and the fractions used so far) is saved under :attr:`state_key`.
    ``curriculum/hard_fraction`` (h_e) is logged every epoch when ``log=True``.

    Args:
        difficulty: per-example difficulty, indexed like the training data set: a boolean mask
            (``True`` = hard), or real scores with ``threshold`` (hard = score > threshold).
        schedule: h_e per epoch: a list of fractions in [0, 1] (the last one holds after the
            list ends; see :func:`linear_schedule`) or a callable ``epoch -> fraction``.
        threshold: for scores: an example is hard when its score is above it.
        num_samples: draws per epoch (>= 1); default ``len(difficulty)``.
        seed: seed of the draws (integer >= 0).
        log: log h_e.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from lightopt.callbacks.curriculum import StochasticCurriculum, linear_schedule
        >>> lengths = torch.arange(100)  # e.g. sequence lengths: longer is harder
        >>> curriculum = StochasticCurriculum(lengths, linear_schedule(0.1, 0.5, 5), threshold=49.5)
        >>> loader = DataLoader(TensorDataset(lengths), batch_size=10, sampler=curriculum.sampler)
        >>> curriculum.sampler.set_epoch(0)
        >>> sum(i >= 50 for i in curriculum.sampler), len(curriculum.sampler)  # about 10% hard
        (10, 100)
    """

    def __init__(
        self,
        difficulty: Any,
        schedule: Schedule,
        *,
        threshold: float | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        log: bool = True,
    ) -> None:
        hard = _hard_mask(difficulty, threshold)
        self.schedule = _check_schedule(schedule)
        self.num_samples = len(hard) if num_samples is None else check_int("num_samples", num_samples, 1)
        self.seed = check_int("seed", seed, 0)
        self.log = check_bool("log", log)
        if not callable(self.schedule):
            needed = (("hard", hard.sum(), max(self.schedule) > 0), ("easy", (~hard).sum(), min(self.schedule) < 1))
            for group, count, needs in needed:
                if needs and count == 0:
                    raise ValueError(
                        f"`difficulty` marks no example as {group}, but `schedule` asks for {group} examples. "
                        f"Mark some as {group} (or change `threshold`), or change the schedule."
                    )
        self.hard = hard
        self.sampler = CurriculumSampler(hard, self.fraction, self.num_samples, self.seed)
        self.epoch = 0
        self.history: list[float] = []

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(seed=self.seed, num_samples=self.num_samples)

    def fraction(self, epoch: int) -> float:
        """h_e, the share of hard draws in epoch ``epoch``."""
        return check_range("schedule(epoch)", schedule_value(self.schedule, epoch), 0.0, 1.0)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loaders = _loaders(getattr(trainer.train_dataloader, "flattened", None) or trainer.train_dataloader)
        ours = [dl for dl in loaders if self.sampler in _samplers(dl)]
        if not ours:
            raise ValueError(
                "No training DataLoader uses the curriculum's sampler. Build the training loader with "
                "`DataLoader(dataset, batch_size=..., sampler=curriculum.sampler)`."
            )
        for loader in ours:
            size = len(loader.dataset)
            if size != len(self.hard):
                raise ValueError(
                    f"`difficulty` has {len(self.hard)} entries, but the training data set has {size} examples; "
                    "give one difficulty per example, indexed like the data set."
                )

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch = trainer.current_epoch
        self.sampler.set_epoch(self.epoch)
        h = self.fraction(self.epoch)
        del self.history[self.epoch :]
        self.history.append(h)
        if self.log:
            pl_module.log("curriculum/hard_fraction", h, on_step=False, on_epoch=True)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "history": list(self.history)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch = state_dict.get("epoch", 0)
        self.history = list(state_dict.get("history", []))
        self.sampler.set_epoch(self.epoch)


class Continuation(Callback):
    r"""A continuation method, §8.7.6: schedule a module attribute from an easy objective to the true one.

    .. math::
        J^{(0)}, J^{(1)}, \dots, J^{(n)} = J, \qquad
        \text{e.g. blurring (8.40): } J^{(i)}(\theta)
            = \mathbb{E}_{\theta' \sim \mathcal{N}(\theta' ; \theta, \sigma^{(i)2})} J(\theta')

    The module defines the family J^(i) through one attribute (a blur σ, a smoothing
    temperature, a noise scale); this callback sets ``pl_module.<attribute>`` to
    ``schedule[t]`` before each epoch (``interval="epoch"``, t = ``trainer.current_epoch``) or
    each optimizer step (``interval="step"``, t = ``trainer.global_step``), so the solution of
    each J^(i) is the starting point of the next, as the book prescribes. The module reads the
    attribute in ``training_step``; whether validation uses it is the module's choice.

    ==========  ==================  ==============================================
    book        argument            meaning
    ==========  ==================  ==============================================
    J^(i)       ``attribute``       the module attribute that selects J^(i)
    σ^(i)       ``schedule[i]``     its value at epoch or step i
    ==========  ==================  ==============================================

    The attribute may be a dotted path (``"blur.sigma"``) and must exist when fitting starts; a
    float or int is replaced, a tensor is filled in place. The value is logged as
    ``continuation/<attribute>`` (per epoch or per step) when ``log=True``. The last value set
    is saved under :attr:`state_key`; after resuming, the schedule sets the next value from the
    restored epoch or step. The book's caveats: continuation may need many stages, the easy
    objectives may never be convex, and the blurred minimum may lead to a local one.

    Args:
        attribute: the attribute's name on the LightningModule.
        schedule: values per epoch or step, a list (the last value holds after it ends; see
            :func:`linear_schedule`) or a callable ``t -> value``.
        interval: ``"epoch"`` or ``"step"``.
        log: log the value.

    Example:
        >>> import lightning as L, torch
        >>> from lightopt.callbacks.curriculum import Continuation, linear_schedule
        >>> class Blurred(L.LightningModule):  # J(θ) = θ², blurred with σ (eq. 8.40)
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.theta = torch.nn.Parameter(torch.tensor([2.0]))
        ...         self.sigma = 1.0
        ...     def training_step(self, batch, batch_idx):
        ...         theta_prime = self.theta + self.sigma * torch.randn(8)  # Monte-Carlo E over θ'
        ...         return (theta_prime ** 2).mean()
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        >>> model = Blurred()
        >>> trainer = L.Trainer(max_epochs=4, callbacks=[Continuation("sigma", linear_schedule(1.0, 0.0, 4))],
        ...     logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...     enable_model_summary=False)
        >>> trainer.fit(model, torch.utils.data.DataLoader(torch.zeros(2, 1)))
        >>> model.sigma  # the true objective J at the last epoch
        0.0
    """

    def __init__(self, attribute: str, schedule: Schedule, *, interval: str = "epoch", log: bool = True) -> None:
        if not isinstance(attribute, str) or not attribute:
            raise TypeError(f"`attribute` must be a non-empty string, but got attribute={attribute!r}.")
        self.attribute = attribute
        self.schedule = _check_schedule(schedule, bounded=False)
        self.interval = check_choice("interval", interval, ("epoch", "step"))
        self.log = check_bool("log", log)
        self.value: float | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(attribute=self.attribute, interval=self.interval)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        owner, name = _resolve_attribute(pl_module, self.attribute)
        if not hasattr(owner, name):
            numeric = [
                k
                for k, v in vars(pl_module).items()
                if not k.startswith("_") and not isinstance(v, bool) and isinstance(v, (int, float, torch.Tensor))
            ]
            raise ValueError(
                f"`attribute` {self.attribute!r} is not an attribute of {type(pl_module).__name__}. Set it in "
                f"`__init__` (e.g. `self.{self.attribute} = 1.0`), or use any of the following: "
                f"{', '.join(repr(k) for k in numeric) or '(none)'}."
            )
        if self.value is not None:  # restored from a checkpoint
            self._set(pl_module, self.value)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.interval == "epoch":
            self._apply(pl_module, trainer.current_epoch, on_step=False)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.interval == "step":
            self._apply(pl_module, trainer.global_step, on_step=True)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.value = state_dict.get("value")

    def _apply(self, pl_module: pl.LightningModule, t: int, *, on_step: bool) -> None:
        self.value = schedule_value(self.schedule, t)
        self._set(pl_module, self.value)
        if self.log:
            pl_module.log(f"continuation/{self.attribute}", self.value, on_step=on_step, on_epoch=not on_step)

    def _set(self, pl_module: pl.LightningModule, value: float) -> None:
        owner, name = _resolve_attribute(pl_module, self.attribute)
        current = getattr(owner, name)
        if isinstance(current, torch.Tensor):
            with torch.no_grad():
                current.fill_(value)
        else:
            setattr(owner, name, value)


def _resolve_attribute(pl_module: Any, path: str) -> tuple[Any, str]:
    *parents, name = path.split(".")
    owner = pl_module
    for part in parents:
        owner = getattr(owner, part, None)
    return owner, name


def _loaders(iterables: Any) -> list[Any]:
    """The training loaders in what ``trainer.train_dataloader`` returns: one loader, or a dict or list of them."""
    if isinstance(iterables, Mapping):
        return [loader for value in iterables.values() for loader in _loaders(value)]
    if isinstance(iterables, (list, tuple)):
        return [loader for value in iterables for loader in _loaders(value)]
    return [iterables]


def _samplers(loader: Any) -> list[Any]:
    batch_sampler = getattr(loader, "batch_sampler", None)
    return [getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)]


def _hard_mask(difficulty: Any, threshold: float | None) -> np.ndarray:
    if isinstance(difficulty, (str, bytes)):
        raise TypeError(f"`difficulty` must be a 1-D array of scores or booleans, but got difficulty={difficulty!r}.")
    if isinstance(difficulty, torch.Tensor):
        difficulty = difficulty.detach().cpu().numpy()
    values = np.asarray(difficulty)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"`difficulty` must be a non-empty 1-D array, but got shape {values.shape}.")
    if values.dtype == np.bool_:
        if threshold is not None:
            raise ValueError("`threshold` must be None when `difficulty` is a boolean mask; drop it.")
        return values.copy()
    if not np.issubdtype(values.dtype, np.number):
        raise TypeError(f"`difficulty` must hold booleans or real numbers, but got dtype {values.dtype}.")
    if threshold is None:
        raise ValueError(
            "`threshold` is required when `difficulty` holds scores: examples scoring above it are hard. "
            "Pass e.g. threshold=float(np.median(difficulty)), or give a boolean mask."
        )
    threshold = check_number("threshold", threshold)
    if np.isnan(values).any():
        raise ValueError("`difficulty` must not contain NaN.")
    return values > threshold


def _check_schedule(schedule: Any, *, bounded: bool = True) -> Schedule:
    if callable(schedule):
        return schedule
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence):
        raise TypeError(f"`schedule` must be a list of numbers or a callable, but got schedule={schedule!r}.")
    if len(schedule) == 0:
        raise ValueError("`schedule` must have at least one value, but got schedule=[].")
    if bounded:
        return [check_range(f"schedule[{i}]", v, 0.0, 1.0) for i, v in enumerate(schedule)]
    return [check_number(f"schedule[{i}]", v) for i, v in enumerate(schedule)]
