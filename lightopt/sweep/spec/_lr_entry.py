"""The learning rate a range test (§8.3.1) is about: its search entry, its coordinate, and recorded bounds.

The range test itself trains (:mod:`lightopt.sweep.trial`); this module only reads the file:
:func:`lr_entry` says which learning rate the test ramps, in which coordinate its bounds are
(the config's ε, or the effective step ε/(1 − α) of a ``coordinate: effective`` entry, or ε at a
reference batch size) and at which momentum α the effective step is reported. A study records the
bounds of a ``{range_test: true}`` entry in ``user_attrs["lightopt"]["range_test"]``;
:func:`with_recorded_bounds` gives the file back with those bounds set, so a resumed study and
``lightopt sweep show`` use them without testing again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightopt.runconfig import ConfigError, get_key

if TYPE_CHECKING:  # reading a study's record back imports no torch (``sweep show NAME``)
    from lightopt.sweep.spec._file import SweepFile

__all__ = ["LrEntry", "lr_entry", "recorded_range_test", "with_recorded_bounds"]


@dataclass(frozen=True)
class LrEntry:
    """What a range test of a file ramps, and how its numbers read.

    ``key`` is the config's dotted key of the learning rate (None when the file names none: the
    test then ramps whatever ``configure_optimizers`` returns); ``name`` the search entry's trial
    parameter name (None for a plain run file). A value v of the tested coordinate trains with
    the learning rate ``v * scale``: 1 for the learning rate itself, (1 − α) for the effective
    step, (1 − α)·B/B_ref with batch scaling. ``momentum`` is the α at which the effective step
    ε/(1 − α) is reported (None: no momentum in the search or the entry). ``low``/``high`` are
    the entry's own range in its coordinate (the test's default range), or None.
    """

    key: str | None = None
    name: str | None = None
    scale: float = 1.0
    coordinate: str = "lr"
    momentum: float | None = None
    low: float | None = None
    high: float | None = None
    range_test: bool = False
    notes: tuple[str, ...] = ()

    def lr(self, value: float) -> float:
        """The learning rate a value of the tested coordinate trains with."""
        return value * self.scale

    def effective(self, value: float) -> float | None:
        """The effective step ε/(1 − α) of a value of the tested coordinate (None without a momentum)."""
        return None if self.momentum is None else self.lr(value) / (1.0 - self.momentum)


def _is_lr(key: str) -> bool:
    last = key.rpartition(".")[2].lower()
    return "lr" in last or "learning_rate" in last


def lr_entry(sweep: SweepFile) -> LrEntry:
    """The learning rate a range test of ``sweep`` ramps: the ``range_test: true`` entry, else the searched
    learning rate (a float entry whose last key part has ``lr``), else the config's ``optimizer.init_args.lr``.

    The effective step is reported when the entry has ``coordinate: effective`` or the search has
    the momentum beside it; α is the file's momentum, 0 when the file sets none (a note says so).

    Example:
        >>> from lightopt.sweep.spec import SweepFile, parse_search
        >>> run = {"optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}}
        >>> search = parse_search({"optimizer.init_args.lr": {"range_test": True, "coordinate": "effective"}}, run)
        >>> entry = lr_entry(SweepFile(run, search=search))
        >>> entry.coordinate, round(entry.scale, 6), entry.momentum
        ('effective', 0.1, 0.9)
    """
    run, space = sweep.run, sweep.search
    param = next(iter(space.deferred), None) or next(
        (p for p in space if p.kind == "float" and _is_lr(p.key) and p.coordinate.kind != "horizon"), None
    )
    if param is None:
        key = "optimizer.init_args.lr" if get_key(run, "optimizer.init_args.lr", None) is not None else None
        return LrEntry(key=key)
    coordinate = param.coordinate
    momentum_key = param.key.rpartition(".")[0] + ".momentum" if "." in param.key else "momentum"
    searched = {p.key for p in space}
    momentum, notes = None, []
    if coordinate.kind == "effective" or momentum_key in searched:
        momentum = get_key(run, momentum_key, None)
        if momentum is None:
            momentum = 0.0
            notes.append(f"the file sets no `{momentum_key}`: the test runs at momentum 0")
        if not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ConfigError(
                f"`{momentum_key}` must be in [0, 1) for the range test's effective step, but got {momentum!r}.",
                sweep.path,
                momentum_key,
            )
        momentum = float(momentum)
    scale = 1.0 - momentum if coordinate.kind == "effective" else 1.0
    if coordinate.batch_key is not None:
        batch = get_key(run, coordinate.batch_key, None) or coordinate.batch_reference
        scale *= batch / coordinate.batch_reference
    label = "lr" if coordinate.raw else coordinate.suffix
    return LrEntry(
        key=param.key,
        name=param.name,
        scale=scale,
        coordinate=label,
        momentum=momentum,
        low=param.low,
        high=param.high,
        range_test=param.range_test,
        notes=tuple(notes),
    )


def recorded_range_test(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The range test a study recorded (``user_attrs["lightopt"]["range_test"]``), or None."""
    record = (attrs.get("lightopt") or {}).get("range_test")
    return dict(record) if isinstance(record, Mapping) else None


def with_recorded_bounds(sweep: SweepFile, record: Mapping[str, Any]) -> SweepFile:
    """``sweep`` with its ``range_test: true`` entry bounded by a recorded range test (``{"name", "low", "high"}``).

    A file whose entry the record does not name (the search changed) keeps its deferred bounds.

    Example:
        >>> from lightopt.sweep.spec import SweepFile, parse_search
        >>> run = {"optimizer": {"lr": 0.1}}
        >>> sweep = SweepFile(run, search=parse_search({"optimizer.lr": {"range_test": True}}, run))
        >>> bounded = with_recorded_bounds(sweep, {"name": "optimizer.lr", "low": 0.001, "high": 0.1})
        >>> bounded.search.params[0].low, bounded.search.deferred
        (0.001, ())
    """
    names = {p.name for p in sweep.search.deferred}
    if record.get("name") not in names:
        return sweep
    low, high = float(record["low"]), float(record["high"])
    return dataclasses.replace(sweep, search=sweep.search.with_bounds({record["name"]: (low, high)}))
