"""The search space of a sweep: one parameter per dotted key of the run config.

Each entry of a sweep file's ``search`` block maps a dotted key to one of these forms::

    search:
      optimizer.init_args.lr: {low: 1.0e-4, high: 1.0, log: true}      # float, log scale
      optimizer.init_args.momentum: {low: 0.0, high: 0.99, step: 0.01}  # float on a grid of 0.01
      model.init_args.hidden: {low: 16, high: 256, log: true}           # int: both bounds are integers
      model.init_args.dropout: {low: 0, high: 1, type: float}           # integer bounds, float values
      data.init_args.batch_size: {choices: [16, 32, 64, 128]}           # categorical
      optimizer: {choices: {sgd: {class_path: lightopt.optim.SGD, init_args: {lr: 0.1}},
                            adam: {class_path: lightopt.optim.Adam, init_args: {lr: 0.001}}}}
      optimizer.init_args.nesterov: {choices: [false, true], when: {optimizer.class_path: lightopt.optim.SGD}}

* ``low``/``high`` (inclusive), optional ``log`` (needs ``low > 0``), ``step`` (not with ``log``)
  and ``type`` (``int`` or ``float``; by default ``int`` when both bounds are integers, so write
  ``1.0`` for a float bound) become ``trial.suggest_float``/``suggest_int``.
* ``choices`` as a list of scalars (numbers, strings, booleans, null) become
  ``trial.suggest_categorical``; as a mapping from a label to any value (a whole optimizer
  block, a list), the trial records the label and the config gets the value.
* ``when: {dotted.key: value or [values]}`` makes a parameter conditional: it is suggested only
  if every key named there holds that value (or one of the list) in the config *after the
  parameters above it are applied*, so a condition may refer to an earlier searched key. An
  inactive parameter is not in the trial's params and the config keeps the file's value.

Search coordinates from Chapter 8 (see :mod:`lightopt.sweep.spec._coordinates`) sample a number in
another coordinate and convert it for the config::

    optimizer.init_args.momentum: {low: 2, high: 100, log: true, coordinate: horizon}  # α = 1 - 1/h
    optimizer.init_args.lr: {low: 1.0e-3, high: 10.0, log: true, coordinate: effective,  # ε = eff·(1 - α)
                             scale_with_batch: data.init_args.batch_size}               # ... · B/B_ref

* ``coordinate: horizon`` samples h = 1/(1 − α) (``low`` >= 1); ``coordinate: effective`` samples
  ε/(1 − α), with α from the sibling ``momentum`` key (set in the file or searched);
  ``scale_with_batch`` samples ε at a reference batch size (the file's, or ``{key: ...,
  reference: 64}``) and multiplies by B/B_ref. They need ``low``/``high`` and are floats.
* Converted values are set after the other parameters (momenta before learning rates), so a
  ``when`` condition sees the file's value at a converted key.

The chapter's learning-rate test (§8.3.1, see :mod:`lightopt.sweep.spec._lr_entry`) may set a
learning rate's bounds::

    optimizer.init_args.lr: {range_test: true}                          # bounds from the range test
    optimizer.init_args.lr: {range_test: true, low: 1.0e-4, high: 1.0}  # ... which searches only [low, high]

* ``range_test: true`` defers ``low``/``high`` to the range test that ``lightopt sweep run`` runs
  when it creates the study; the study records them, so a resumed study never runs it again. The
  entry is a float on a log scale unless it says ``log: false``; it takes ``coordinate: effective``
  and ``scale_with_batch`` (its bounds are then in that coordinate), not ``step`` or ``choices``.
  Given ``low`` and ``high`` too, the test searches only that range, so its bounds lie inside it.
  One entry of a search may have it.

The trial's parameter names are the dotted keys, with ``:coordinate`` appended for a converted
one (``optimizer.init_args.momentum:horizon``, ``optimizer.init_args.lr:effective_at_batch_64``),
so ``trial.params`` rebuilds the trial's config with :meth:`SearchSpace.apply`.

Example:
    >>> run = {"optimizer": {"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}}
    >>> space = parse_search({
    ...     "optimizer.init_args.momentum": {"low": 2.0, "high": 100.0, "log": True, "coordinate": "horizon"},
    ...     "optimizer.init_args.lr": {"low": 0.01, "high": 10.0, "log": True, "coordinate": "effective"}}, run)
    >>> space.names
    ('optimizer.init_args.momentum:horizon', 'optimizer.init_args.lr:effective')
    >>> config = space.apply(
    ...     run, {"optimizer.init_args.momentum:horizon": 10.0, "optimizer.init_args.lr:effective": 0.5})
    >>> {k: round(v, 6) for k, v in config["optimizer"]["init_args"].items()}
    {'lr': 0.05, 'momentum': 0.9}
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from lightopt import _validation
from lightopt._validation import did_you_mean
from lightopt.runconfig import check_key, get_key, set_key
from lightopt.sweep.spec._coordinates import RAW, Coordinate, parse_coordinate

__all__ = ["Param", "SearchSpace", "parse_search"]

_SPEC_KEYS = (
    "low",
    "high",
    "log",
    "step",
    "type",
    "choices",
    "when",
    "coordinate",
    "scale_with_batch",
    "range_test",
)
_SCALARS = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Param:
    """One searched dotted key. ``kind`` is ``"float"``, ``"int"`` or ``"categorical"``.

    ``choices`` are what Optuna sees (scalars, or the labels of a mapping); ``values`` are what
    the config gets for each choice when the file gave a mapping, else None. ``name`` is the
    trial's parameter name: ``key``, the dotted key into the config, plus ``:suffix`` when
    ``coordinate`` converts the sampled value. ``range_test`` is True while the bounds wait for the
    learning-rate range test (``low``/``high`` are then the test's own range, or None): such a
    parameter cannot be suggested until :meth:`SearchSpace.with_bounds` sets them.
    """

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    values: tuple[Any, ...] | None = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    coordinate: Coordinate = RAW
    key: str = ""
    range_test: bool = False

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.name)

    def active(self, config: Mapping[str, Any]) -> bool:
        """Whether every condition in ``when`` holds in ``config``."""
        return all(get_key(config, key, None) in allowed for key, allowed in self.when)

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask ``trial`` for this parameter; returns the value Optuna records."""
        self._check_bounds()
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution :meth:`suggest` draws from (what a study records for this parameter)."""
        self._check_bounds()
        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def refuses(self, value: Any) -> str | None:
        """Why :meth:`suggest` could not have recorded ``value`` (``"outside [0.01, 0.5]"``), or None when it could.

        The one check of a value given from outside the sampler: a ``study.enqueue`` entry, a trial
        copied by ``study.warm_start``. A ``range_test`` entry whose bounds are not settled yet refuses
        only values that are not positive finite numbers (Optuna checks the settled range).

        Example:
            >>> param = Param("lr", "float", 0.01, 0.5, step=0.01)
            >>> param.refuses(0.2), param.refuses(0.6), param.refuses(0.205)
            (None, 'outside [0.01, 0.5]', 'not on the grid 0.01 + k * 0.01')
        """
        if self.kind == "categorical":
            return (
                None
                if any(type(c) is type(value) and c == value for c in self.choices)
                else (f"not one of {list(self.choices)}")
            )
        if not _validation.is_real(value) or not math.isfinite(value):
            return "not a finite number"
        if self.kind == "int" and not float(value).is_integer():
            return "not an integer"
        if self.range_test and self.low is None:
            return None if value > 0 else "not > 0"
        if not self.low <= value <= self.high:
            return f"outside [{self.low}, {self.high}]"
        if self.step is not None:
            steps = (value - self.low) / self.step
            if abs(steps - round(steps)) > 1e-6:
                return f"not on the grid {self.low} + k * {self.step}"
        return None

    def _check_bounds(self) -> None:
        if self.range_test:
            raise ValueError(
                f"`search.{self.key}` has `range_test: true`: its bounds come from the learning-rate range test, "
                "which runs when `lightopt sweep run` creates the study; run the sweep first."
            )

    def config_value(self, value: Any) -> Any:
        """What the config gets for the recorded ``value`` (a mapping choice's value for its label)."""
        if self.values is None:
            return value
        if value not in self.choices:
            raise ValueError(f"`{self.name}` must be one of {list(self.choices)}, but got {self.name}={value!r}.")
        return copy.deepcopy(self.values[self.choices.index(value)])

    def grid(self) -> list[Any]:
        """Every value, for ``GridSampler``: the choices, or the range when ``step`` is set."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int" and not self.log:
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.kind == "float" and self.step:
            count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
            return [round(self.low + i * self.step, 12) for i in range(count)]
        raise ValueError(
            f"`search.{self.name}` must have `choices` or a `step` (not `log`) for the grid sampler, which needs "
            "every value listed."
        )


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of a sweep, in file order (conditions see the parameters above them)."""

    params: tuple[Param, ...] = ()

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param:
        """The parameter named ``name`` (as in :attr:`names`); ``KeyError`` when there is none."""
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    def suggest(self, trial: optuna.Trial, config: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``config`` with each active parameter suggested by ``trial`` and set."""
        config = copy.deepcopy(dict(config))
        converted = []
        for param in self.params:
            if param.active(config):
                converted += _set(config, param, param.config_value(param.suggest(trial)))
        return _convert(config, converted)

    def apply(self, config: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``config`` with recorded trial ``params`` (named as :attr:`names`) set in file order."""
        unknown = [name for name in params if name not in self.names]
        if unknown:
            raise ValueError(
                f"`params` must name searched keys, but got {unknown[0]!r}; the search has {list(self.names)}."
                + did_you_mean(unknown[0], self.names)
            )
        config = copy.deepcopy(dict(config))
        converted = []
        for param in self.params:
            if param.name in params:
                converted += _set(config, param, param.config_value(params[param.name]))
        return _convert(config, converted)

    def grid(self) -> dict[str, list[Any]]:
        return {p.name: p.grid() for p in self.params}

    @property
    def deferred(self) -> tuple[Param, ...]:
        """The parameters whose bounds wait for the learning-rate range test (``range_test: true``)."""
        return tuple(p for p in self.params if p.range_test)

    def with_bounds(self, bounds: Mapping[str, tuple[float, float]]) -> SearchSpace:
        """This space with the range test's ``(low, high)`` set on the deferred parameters named in ``bounds``.

        Example:
            >>> space = parse_search({"optimizer.lr": {"range_test": True}}, {"optimizer": {"lr": 0.1}})
            >>> space.deferred[0].name, space.with_bounds({"optimizer.lr": (0.01, 1.0)}).params[0].distribution()
            ('optimizer.lr', FloatDistribution(high=1.0, log=True, low=0.01, step=None))
        """
        unknown = [name for name in bounds if name not in {p.name for p in self.deferred}]
        if unknown:
            raise ValueError(f"`bounds` must name parameters with `range_test: true`, but got {unknown[0]!r}.")
        params = []
        for param in self.params:
            if param.name in bounds:
                low, high = (float(v) for v in bounds[param.name])
                if not 0 < low <= high or not math.isfinite(high):
                    raise ValueError(
                        f"`search.{param.key}` range-test bounds must satisfy 0 < low <= high, "
                        f"but got low={low!r}, high={high!r}."
                    )
                param = dataclasses.replace(param, low=low, high=high, range_test=False)
            params.append(param)
        return SearchSpace(tuple(params))


def _set(config: dict[str, Any], param: Param, value: Any) -> list[tuple[Param, Any]]:
    """Set a raw parameter now; return a converted one for :func:`_convert`."""
    if not param.coordinate.raw:
        return [(param, value)]
    set_key(config, param.key, value)
    return []


def _convert(config: dict[str, Any], converted: list[tuple[Param, Any]]) -> dict[str, Any]:
    """Set the converted parameters once the raw ones are in place, momenta first."""
    for param, value in sorted(converted, key=lambda item: item[0].coordinate.order):
        try:
            set_key(config, param.key, param.coordinate.to_config(value, config))
        except ValueError as error:
            raise ValueError(f"`search.{param.key}` cannot be converted for {param.name}={value!r}: {error}") from None
    return config


def parse_search(search: Any, run: Mapping[str, Any], where: str = "search") -> SearchSpace:
    """Check a ``search`` block against the run config ``run`` and build the :class:`SearchSpace`.

    Raises ``ValueError``/``TypeError`` naming the dotted place (``search.<key>.<field>``).
    """
    if search is None:
        return SearchSpace()
    if not isinstance(search, Mapping):
        raise TypeError(f"`{where}` must be a mapping from dotted keys to parameter specs, but got {search!r}.")
    params: list[Param] = []
    for name in search:
        if not isinstance(name, str) or not name:
            raise TypeError(f"`{where}` keys must be dotted keys such as optimizer.init_args.lr, but got {name!r}.")
    keys = tuple(search)
    tested = [name for name, spec in search.items() if isinstance(spec, Mapping) and spec.get("range_test") is True]
    if len(tested) > 1:
        raise ValueError(
            f"`{where}.{tested[1]}.range_test` is the second entry with `range_test: true` (after `{tested[0]}`): "
            "the range test finds one learning rate; give the other entry `low` and `high`."
        )
    for name, spec in search.items():
        param = _parse_param(name, spec, f"{where}.{name}")
        coordinate = parse_coordinate(name, spec, run, keys, f"{where}.{name}")
        if not coordinate.raw:
            param = dataclasses.replace(param, name=f"{name}:{coordinate.suffix}", key=name, coordinate=coordinate)
        params.append(param)
    space = SearchSpace(tuple(params))
    converted = {p.key for p in space.params if not p.coordinate.raw}
    for i, param in enumerate(space.params):
        earlier = space.params[:i]
        check_key(run, param.key, f"{where}.{param.key}", _classes_at(space.params), _free(earlier))
        for key, _ in param.when:
            if key in converted:
                raise ValueError(
                    f"`{where}.{param.key}.when` refers to `{key}`, whose value is converted from a coordinate after "
                    "the other parameters are set; a condition cannot depend on it."
                )
            if key in keys[i:]:
                raise ValueError(
                    f"`{where}.{param.key}.when` refers to `{key}`, which is searched at or after this entry; "
                    "move its entry above this one."
                )
            check_key(run, key, f"{where}.{param.key}.when.{key}", _classes_at(space.params), _free(earlier))
    return space


def _classes_at(params: tuple[Param, ...]):
    searched = {
        p.key[: -len(".class_path")] if "." in p.key else "": p.choices
        for p in params
        if p.key == "class_path" or p.key.endswith(".class_path")
    }
    return lambda prefix: searched.get(prefix, ())


def _free(earlier: tuple[Param, ...]):
    """Below a key set to a mapping choice, the file cannot say what exists."""
    roots = [p.key for p in earlier if p.values is not None]
    return lambda prefix: any(prefix == r or prefix.startswith(r + ".") for r in roots)


def _parse_param(name: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"`{where}` must be a mapping such as {{low: 0.001, high: 1.0, log: true}} or {{choices: [16, 32]}}, "
            f"but got {spec!r}."
        )
    _validation.check_known_keys(spec, _SPEC_KEYS, where, named=False)
    when = _parse_when(spec.get("when"), f"{where}.when")
    if spec.get("range_test", False) is not False:
        return _parse_range_test(name, spec, where, when)
    if "choices" in spec:
        extra = [k for k in ("low", "high", "log", "step", "type") if k in spec]
        if extra:
            raise ValueError(
                f"`{where}` must have either `choices` or `low` and `high`, but got both `choices` and `{extra[0]}`."
            )
        return _parse_choices(name, spec["choices"], f"{where}.choices", when)
    for bound in ("low", "high"):
        if bound not in spec:
            raise ValueError(f"`{where}` must have `low` and `high`, or `choices`, but `{bound}` is missing.")
        value = spec[bound]
        if not _validation.is_real(value) or not math.isfinite(value):
            raise TypeError(f"`{where}.{bound}` must be a finite number, but got {bound}={value!r}.")
    low, high = spec["low"], spec["high"]
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise TypeError(f"`{where}.log` must be true or false, but got log={log!r}.")
    step = spec.get("step")
    kind = spec.get("type")
    if kind is None and ("coordinate" in spec or "scale_with_batch" in spec):
        kind = "float"  # a converted value is a real number whatever its bounds
    if kind is None:
        integral = all(isinstance(v, numbers.Integral) for v in (low, high, step if step is not None else 0))
        kind = "int" if integral else "float"
    elif kind not in ("int", "float"):
        raise ValueError(
            f"`{where}.type` must be 'int' or 'float', but got type={kind!r}.{did_you_mean(kind, ('int', 'float'))}"
        )
    if kind == "int":
        for field, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and not (isinstance(value, numbers.Integral) or float(value).is_integer()):
                raise TypeError(f"`{where}.{field}` must be an integer for type: int, but got {field}={value!r}.")
        low, high, step = int(low), int(high), None if step is None else int(step)
    else:
        low, high = float(low), float(high)
    if low > high:
        raise ValueError(f"`{where}.low` must be <= `high`, but got low={low!r}, high={high!r}.")
    if log and low <= 0:
        raise ValueError(f"`{where}.low` must be > 0 with log: true, but got low={low!r}.")
    if step is not None:
        if not _validation.is_real(step) or not step > 0:
            raise ValueError(f"`{where}.step` must be a number > 0, but got step={step!r}.")
        if log:
            raise ValueError(f"`{where}` must not have both `step` and `log: true` (Optuna samples one or the other).")
        step = step if kind == "int" else float(step)
    return Param(name, kind, low, high, log, step, when=when)


def _parse_range_test(name: str, spec: Mapping[str, Any], where: str, when: tuple) -> Param:
    """``{range_test: true}``: a float on a log scale (unless ``log: false``) whose bounds the range test sets.

    Explicit ``low``/``high`` (both or neither) are the range the test searches, so the bounds it
    suggests lie inside them.
    """
    if spec["range_test"] is not True:
        raise TypeError(f"`{where}.range_test` must be true or false, but got range_test={spec['range_test']!r}.")
    last = name.rpartition(".")[2].lower()
    if "lr" not in last and "learning_rate" not in last:
        raise ValueError(
            f"`{where}.range_test` is for a learning rate (a key such as optimizer.init_args.lr), but got `{name}`."
        )
    for field in ("step", "choices"):
        if field in spec:
            raise ValueError(f"`{where}` must not have both `range_test` and `{field}`: the test sets a float range.")
    if spec.get("type", "float") != "float":
        raise ValueError(f"`{where}.type` must be float with range_test, but got type={spec['type']!r}.")
    if spec.get("coordinate") == "horizon":
        raise ValueError(f"`{where}.range_test` is for a learning rate, not a momentum (coordinate: horizon).")
    log = spec.get("log", True)
    if not isinstance(log, bool):
        raise TypeError(f"`{where}.log` must be true or false, but got log={log!r}.")
    given = [bound for bound in ("low", "high") if bound in spec]
    if len(given) == 1:
        other = "high" if given[0] == "low" else "low"
        raise ValueError(
            f"`{where}` with range_test takes both `low` and `high` (the range the test searches) or neither, "
            f"but `{other}` is missing."
        )
    low = high = None
    if given:
        for bound in given:
            value = spec[bound]
            if not _validation.is_real(value) or not math.isfinite(value):
                raise TypeError(f"`{where}.{bound}` must be a finite number, but got {bound}={value!r}.")
        low, high = float(spec["low"]), float(spec["high"])
        if not 0 < low < high:
            raise ValueError(
                f"`{where}` with range_test must have 0 < low < high (the range the test searches), "
                f"but got low={low!r}, high={high!r}."
            )
    return Param(name, "float", low, high, log, when=when, range_test=True)


def _parse_choices(name: str, choices: Any, where: str, when: tuple) -> Param:
    if isinstance(choices, Mapping):
        if not choices:
            raise ValueError(f"`{where}` must not be empty, but got choices={{}}.")
        labels = tuple(choices)
        bad = [label for label in labels if not isinstance(label, str)]
        if bad:
            raise TypeError(f"`{where}` labels must be strings, but got {bad[0]!r}.")
        return Param(name, "categorical", choices=labels, values=tuple(choices.values()), when=when)
    if not isinstance(choices, (list, tuple)):
        raise TypeError(f"`{where}` must be a list or a mapping from labels to values, but got choices={choices!r}.")
    if not choices:
        raise ValueError(f"`{where}` must not be empty, but got choices=[].")
    for choice in choices:
        if not isinstance(choice, _SCALARS):
            raise TypeError(
                f"`{where}` must hold numbers, strings, booleans or null, but got {choice!r}; "
                "for other values give a mapping from labels to values, e.g. {a: [0.9, 0.999]}."
            )
    if len({(type(c), c) for c in choices}) != len(choices):
        raise ValueError(f"`{where}` must not repeat a value, but got choices={list(choices)}.")
    return Param(name, "categorical", choices=tuple(choices), when=when)


def _parse_when(when: Any, where: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    if not isinstance(when, Mapping) or not when:
        raise TypeError(
            f"`{where}` must be a mapping such as {{optimizer.class_path: [lightopt.optim.SGD]}}, but got {when!r}."
        )
    parsed = []
    for key, allowed in when.items():
        if not isinstance(key, str):
            raise TypeError(f"`{where}` keys must be dotted keys, but got {key!r}.")
        allowed = tuple(allowed) if isinstance(allowed, (list, tuple)) else (allowed,)
        if not allowed:
            raise ValueError(f"`{where}.{key}` must list at least one value, but got [].")
        parsed.append((key, allowed))
    return tuple(parsed)
