"""Search coordinates from Chapter 8: momentum as its horizon, the effective step, batch-scaled ε.

A search entry may sample a learning rate or a momentum in a coordinate other than the config's
own and convert the sampled value before it reaches the config:

* ``coordinate: horizon`` on a momentum key samples h = 1/(1 − α) and sets α = 1 − 1/h. Under a
  constant gradient, momentum's step tends to the terminal velocity ε‖g‖/(1 − α) (eq. 8.17), so h
  is the factor by which momentum multiplies the step; "α = .9 corresponds to multiplying the
  maximum speed by 10". With ``log: true`` on h ∈ [1, 100], the common values α = .5, .9, .99
  (h = 2, 10, 100) sit at 15%, 50% and 100% of the range, where a uniform α ∈ [0, .99] crowds
  them at 51%, 91% and 100%: half the trials get α ≥ .9 instead of one in eleven.
* ``coordinate: effective`` on a learning-rate key samples the effective step ε/(1 − α) and sets
  ε = eff·(1 − α), with α read from the sibling ``momentum`` key (after any searched value is
  set). Learning rate and momentum then stop trading off against each other: a sampled effective
  step means the same terminal speed whatever α is.
* ``scale_with_batch: KEY`` (or ``{key: KEY, reference: B_ref}``) on a learning-rate key samples ε
  at the reference batch size and sets ε·B/B_ref, where B is the config's value at ``KEY`` (the
  linear scaling rule of Goyal et al. 2017, *Accurate, Large Minibatch SGD*; it is not in the
  book). B_ref defaults to the file's value at ``KEY``. It combines with ``coordinate: effective``.

The book's §8.1.3 says why batch size and learning rate interact: the standard error of a
minibatch gradient falls as σ/√n, so "larger batches provide a more accurate estimate of the
gradient, but with less than linear returns", and small batches "offer a regularizing effect"
but need a small learning rate "to maintain stability due to the high variance".

The trial records the sampled value under the dotted key with the coordinate appended
(``optimizer.init_args.momentum:horizon``), so the name says what the number is, Optuna sees one
stable name and distribution per coordinate, and a study never mixes α and h under one name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightopt import _validation
from lightopt._validation import did_you_mean
from lightopt.runconfig import get_key

__all__ = [
    "Coordinate",
    "RAW",
    "config_values",
    "effective_from_lr",
    "horizon_from_momentum",
    "momentum_from_horizon",
    "lr_from_effective",
    "scale_lr_with_batch",
    "parse_coordinate",
]

KINDS = ("raw", "horizon", "effective")


def momentum_from_horizon(horizon: float) -> float:
    """α = 1 − 1/h: the momentum whose terminal velocity (eq. 8.17) is h times the plain step.

    Example:
        >>> [round(momentum_from_horizon(h), 6) for h in (1, 2, 10, 100)]
        [0.0, 0.5, 0.9, 0.99]
    """
    if not _validation.is_real(horizon) or not horizon >= 1 or math.isinf(horizon):
        raise ValueError(f"`horizon` must be a finite number >= 1 (h = 1/(1 - momentum)), but got horizon={horizon!r}.")
    return 1.0 - 1.0 / float(horizon)


def horizon_from_momentum(momentum: float) -> float:
    """h = 1/(1 − α), the inverse of :func:`momentum_from_horizon`.

    Example:
        >>> [round(horizon_from_momentum(a), 6) for a in (0.0, 0.5, 0.9, 0.99)]
        [1.0, 2.0, 10.0, 100.0]
    """
    if not _validation.is_real(momentum) or not 0 <= momentum < 1:
        raise ValueError(
            f"`momentum` must be in [0, 1) to have a horizon 1/(1 - momentum), but got momentum={momentum!r}."
        )
    return 1.0 / (1.0 - float(momentum))


def lr_from_effective(effective: float, momentum: float) -> float:
    """ε = eff·(1 − α): the learning rate whose terminal step ε/(1 − α) equals ``effective``.

    Example:
        >>> round(lr_from_effective(0.5, 0.9), 6)
        0.05
    """
    if not _validation.is_real(momentum) or not 0 <= momentum < 1:
        raise ValueError(f"`momentum` must be in [0, 1) for an effective learning rate, but got momentum={momentum!r}.")
    return float(effective) * (1.0 - float(momentum))


def effective_from_lr(lr: float, momentum: float) -> float:
    """eff = ε/(1 − α), the inverse of :func:`lr_from_effective`.

    Example:
        >>> round(effective_from_lr(0.05, 0.9), 6)
        0.5
    """
    if not _validation.is_real(momentum) or not 0 <= momentum < 1:
        raise ValueError(f"`momentum` must be in [0, 1) for an effective learning rate, but got momentum={momentum!r}.")
    return float(lr) / (1.0 - float(momentum))


def scale_lr_with_batch(lr: float, batch_size: int, reference: int) -> float:
    """ε·B/B_ref, the linear scaling rule.

    Example:
        >>> scale_lr_with_batch(0.1, 256, 64)
        0.4
    """
    for name, value in (("batch_size", batch_size), ("reference", reference)):
        if not _validation.is_integer(value, low=1):
            raise ValueError(f"`{name}` must be an integer >= 1 to scale the learning rate, but got {name}={value!r}.")
    return float(lr) * batch_size / reference


@dataclass(frozen=True)
class Coordinate:
    """How a searched value becomes a config value: ``kind`` (raw, horizon, effective), batch scaling."""

    kind: str = "raw"
    momentum_key: str | None = None
    batch_key: str | None = None
    batch_reference: int | None = None

    @property
    def raw(self) -> bool:
        return self.kind == "raw" and self.batch_key is None

    @property
    def suffix(self) -> str:
        """What the trial's parameter name gets after ``:``, e.g. ``effective_at_batch_64``."""
        parts = [] if self.kind == "raw" else [self.kind]
        if self.batch_key is not None:
            parts.append(f"at_batch_{self.batch_reference}")
        return "_".join(parts)

    @property
    def order(self) -> int:
        """Momenta are set before the learning rates that read them."""
        return 0 if self.kind == "horizon" else 1

    def to_config(self, value: Any, config: Mapping[str, Any]) -> float:
        """The config value for the sampled ``value``, reading momentum and batch size from ``config``."""
        if self.kind == "horizon":
            return momentum_from_horizon(value)
        lr = float(value)
        if self.kind == "effective":
            lr = lr_from_effective(lr, get_key(config, self.momentum_key, None))
        if self.batch_key is not None:
            lr = scale_lr_with_batch(lr, get_key(config, self.batch_key, None), self.batch_reference)
        return lr

    def from_config(self, value: Any, config: Mapping[str, Any]) -> float:
        """The sampled value whose :meth:`to_config` is the config ``value``, reading momentum and batch size
        from ``config``: the inverse, built from the inverses of the same functions.

        A float division may miss ``value`` by an ulp on the way back; the sampled value is then moved by
        a few ulps so that :meth:`to_config` gives ``value`` exactly, where one does.

        Example:
            >>> Coordinate("horizon").from_config(0.9, {})
            10.000000000000002
            >>> Coordinate("horizon").to_config(10.000000000000002, {})
            0.9
        """
        if self.kind == "horizon":
            sampled = horizon_from_momentum(value)
        else:
            sampled = float(value)
            if self.batch_key is not None:  # ε·B/B_ref undone: ε·B_ref/B
                sampled = scale_lr_with_batch(sampled, self.batch_reference, get_key(config, self.batch_key, None))
            if self.kind == "effective":
                sampled = effective_from_lr(sampled, get_key(config, self.momentum_key, None))
        return _exact(sampled, value, lambda x: self.to_config(x, config))


def _exact(sampled: float, target: float, forward: Any, ulps: int = 4) -> float:
    """``sampled``, or a float within ``ulps`` of it that ``forward`` maps to ``target`` exactly."""
    if forward(sampled) == target:
        return sampled
    below = above = sampled
    for _ in range(ulps):
        below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
        for candidate in (below, above):
            if forward(candidate) == target:
                return candidate
    return sampled


RAW = Coordinate()


def parse_coordinate(
    key: str, spec: Mapping[str, Any], run: Mapping[str, Any], searched: tuple[str, ...], where: str
) -> Coordinate:
    """The coordinate of the search entry ``spec`` at ``key``; checks what it needs exists.

    ``searched`` lists the dotted keys of every search entry (a needed key may be searched
    instead of set in the file).
    """
    kind = spec.get("coordinate", "raw")
    if kind not in KINDS:
        raise ValueError(
            f"`{where}.coordinate` must be one of {', '.join(repr(k) for k in KINDS)}, but got coordinate={kind!r}."
            + did_you_mean(str(kind), KINDS)
        )
    scaling = spec.get("scale_with_batch")
    if kind == "raw" and scaling is None:
        return RAW
    if "choices" in spec:
        field = "coordinate" if kind != "raw" else "scale_with_batch"
        raise ValueError(f"`{where}.{field}` needs `low` and `high`, not `choices`: it converts a sampled number.")
    if spec.get("type") == "int":
        raise ValueError(f"`{where}.type` must be float with a coordinate, but got type='int'.")
    momentum_key = None
    if kind == "horizon":
        if scaling is not None:
            raise ValueError(
                f"`{where}.scale_with_batch` is for a learning rate, but this entry samples a momentum "
                "(coordinate: horizon); put it on the learning rate."
            )
        if spec["low"] < 1:
            raise ValueError(
                f"`{where}.low` must be >= 1 with coordinate: horizon (h = 1/(1 - momentum), h = 1 is momentum 0), "
                f"but got low={spec['low']!r}."
            )
    elif kind == "effective":
        momentum_key = key.rpartition(".")[0] + ".momentum" if "." in key else "momentum"
        if momentum_key == key:
            raise ValueError(
                f"`{where}.coordinate` effective is for a learning rate next to a `momentum`, not the momentum itself."
            )
        if momentum_key not in searched and get_key(run, momentum_key, None) is None:
            raise ValueError(
                f"`{where}.coordinate` effective needs a momentum at `{momentum_key}`, in the config or the search, "
                "but neither has it."
            )
    batch_key, reference = _parse_scaling(scaling, run, searched, f"{where}.scale_with_batch")
    return Coordinate(kind, momentum_key, batch_key, reference)


def _parse_scaling(scaling: Any, run: Mapping[str, Any], searched: tuple[str, ...], where: str):
    if scaling is None:
        return None, None
    if isinstance(scaling, str):
        scaling = {"key": scaling}
    if not isinstance(scaling, Mapping) or not isinstance(scaling.get("key"), str):
        raise TypeError(
            f"`{where}` must be a dotted key such as data.init_args.batch_size, or {{key: ..., reference: 64}}, "
            f"but got {scaling!r}."
        )
    _validation.check_known_keys(scaling, ("key", "reference"), where)
    key = scaling["key"]
    in_file = get_key(run, key, None)
    if key not in searched and in_file is None:
        raise ValueError(f"`{where}` names `{key}`, but neither the config nor the search sets it.")
    reference = scaling.get("reference", in_file)
    if reference is None:
        raise ValueError(f"`{where}.reference` is needed: the file sets no batch size at `{key}` to scale from.")
    if not _validation.is_integer(reference, low=1):
        raise ValueError(f"`{where}.reference` must be an integer >= 1, but got reference={reference!r}.")
    return key, int(reference)


def config_values(params: Mapping[str, Any], config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values a trial's config got for its params sampled in another coordinate, by param name.

    ``optimizer.init_args.momentum:horizon`` → the α at ``optimizer.init_args.momentum`` in ``config``
    (the trial's recorded config); params sampled as the config's own value, and a trial without a
    recorded config, give nothing.

    Example:
        >>> config_values({"opt.momentum:horizon": 10.0, "opt.nesterov": True}, {"opt": {"momentum": 0.9}})
        {'opt.momentum:horizon': 0.9}
    """
    if not config:
        return {}
    values = {}
    for name in params:
        key, coordinate, _ = name.partition(":")
        if coordinate:
            value = get_key(config, key, None)
            if value is not None:
                values[name] = value
    return values
