"""``configure_optimizers`` built from a LightningModule's constructor arguments."""

from __future__ import annotations

import copy
import difflib
import functools
import importlib
import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from lightopt._validation import check_bool, check_choice, check_int

__all__ = ["ConfigureOptimizersMixin"]

_OPTIMIZER_KEYS = ("class_path", "init_args", "no_decay_bias_and_norm")
_SCHEDULER_KEYS = ("class_path", "init_args", "interval", "frequency", "monitor", "strict", "name")
_SEARCHED = ("lightopt.optim", "lightopt.schedules", "torch.optim", "torch.optim.lr_scheduler")
_BASES = (torch.optim.Optimizer, LRScheduler)


class ConfigureOptimizersMixin:
    """Build the optimizer and schedules a LightningModule declares as ``optimizer`` and ``lr_scheduler``.

    Put it before ``LightningModule`` in the bases, give ``__init__`` the two arguments and call
    ``self.save_hyperparameters()``; ``configure_optimizers`` reads ``self.hparams``. Both are plain
    dicts in LightningCLI's form, so ``hparams.yaml``, ``load_from_checkpoint`` and sweeps (which set
    e.g. ``model.init_args.optimizer.init_args.lr``) see the same settings:

    ``optimizer``: ``{"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}``
        Any ``torch.optim.Optimizer``, including lightopt's second-order ones (Lightning passes the
        closure they need). ``"no_decay_bias_and_norm": True`` puts biases and the parameters of
        modules whose class name contains ``Norm`` into groups with ``weight_decay=0`` (the book
        penalizes "only the weights of the affine transformation", §7.1).
    ``lr_scheduler``: ``{"class_path": "lightopt.schedules.LinearDecay", "init_args": {"tau": 500}}``
        or a list of such dicts (e.g. LinearDecay beside MomentumSchedule), or None. Optional keys,
        as in Lightning's scheduler config: ``interval`` (default: the class's ``interval``
        attribute, "step" for lightopt schedules, else "epoch"), ``frequency``, ``monitor``
        (``ReduceLROnPlateau`` defaults to "val_loss"), ``strict``, ``name``. An init arg that is
        itself a ``class_path`` dict (``WarmupThen``'s ``after``) becomes a callable of the optimizer.

    A schedule that takes ``tau`` (``LinearDecay``) and is given none gets the run's length:
    ``self.trainer.estimated_stepping_batches`` optimizer steps for ``interval="step"`` (less
    ``warmup_steps`` when nested in ``WarmupThen``), ``max_epochs`` for ``"epoch"``, divided by
    ``frequency``. Class paths may be short names when unambiguous (``"LinearDecay"``,
    ``"StepLR"``; ``"SGD"`` is both lightopt's and torch's, so give the full path).

    Partial dicts, as sweeps and LightningCLI's ``--model.optimizer.init_args.lr=0.05`` produce:
    a dict without ``class_path`` updates the ``__init__`` default (``{"init_args": {"lr": 0.05}}``
    changes only ε), and keys beside the ones above are init args (``{..., "lr": 0.05}``). Leave
    LightningCLI's own top-level ``--optimizer``/``--lr_scheduler`` unset: they replace this.

    Override :meth:`optimizer_param_groups` for per-layer groups with their own ``lr``, etc.

    Example:
        >>> import lightning as L, torch
        >>> from lightopt import ConfigureOptimizersMixin
        >>> class Net(ConfigureOptimizersMixin, L.LightningModule):
        ...     def __init__(self, optimizer: dict, lr_scheduler: dict | None = None):
        ...         super().__init__()
        ...         self.save_hyperparameters()
        ...         self.layer = torch.nn.Linear(4, 2)
        >>> net = Net(optimizer={"class_path": "lightopt.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}},
        ...           lr_scheduler={"class_path": "LinearDecay", "init_args": {"tau": 100}})
        >>> config = net.configure_optimizers()
        >>> type(config["optimizer"]).__name__, config["lr_scheduler"]["interval"]
        ('SGD', 'step')
    """

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """The param groups to optimize; override for per-layer settings.

        Each group is ``{"params": [...], **overrides}``, e.g. ``{"params": self.head.parameters(),
        "lr": 0.01}``; keys a group leaves out take the optimizer's ``init_args``. The default is one
        group of every parameter that requires a gradient.
        """
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> Any:
        optimizer_config = self._optimization_config("optimizer")
        if optimizer_config is None:
            raise ValueError(
                f"{type(self).__name__} has no `optimizer` in self.hparams: add an `optimizer` argument to __init__ "
                "(a dict with `class_path` and `init_args`) and call self.save_hyperparameters()."
            )
        return _configure_optimizers(self, optimizer_config, self._optimization_config("lr_scheduler"))

    def _optimization_config(self, name: str) -> Any:
        """``self.hparams[name]``; a dict without ``class_path`` updates the ``__init__`` default."""
        config = getattr(self, "hparams", {}).get(name)
        parameter = inspect.signature(type(self).__init__).parameters.get(name)
        default = None if parameter is None else parameter.default
        if isinstance(config, Mapping) and "class_path" not in config and isinstance(default, Mapping):
            init_args = {**(default.get("init_args") or {}), **(config.get("init_args") or {})}
            config = {**default, **config, "init_args": init_args}
        return config


def _configure_optimizers(module: torch.nn.Module, optimizer_config: Any, scheduler_config: Any = None) -> Any:
    """``configure_optimizers``'s return value for ``module`` from the two config dicts.

    The one builder behind the mixin and behind a run file's top-level ``optimizer``/``lr_scheduler``
    (``lightopt fit``, sweeps), which replace any LightningModule's ``configure_optimizers``. Param
    groups come from ``module.optimizer_param_groups()`` where it has one, else every parameter
    that requires a gradient.
    """
    optimizer = _build_optimizer(module, optimizer_config)
    if scheduler_config is None:
        return optimizer
    if isinstance(scheduler_config, Mapping):
        return {"optimizer": optimizer, "lr_scheduler": _build_scheduler(module, optimizer, scheduler_config)}
    if not isinstance(scheduler_config, (list, tuple)):
        raise TypeError(f"`lr_scheduler` must be a dict, a list of dicts or None, but got {scheduler_config!r}.")
    configs = enumerate(scheduler_config)
    return [optimizer], [_build_scheduler(module, optimizer, c, f"lr_scheduler[{i}]") for i, c in configs]


def _param_groups(module: torch.nn.Module) -> Any:
    if callable(getattr(module, "optimizer_param_groups", None)):
        return module.optimizer_param_groups()
    return [{"params": [p for p in module.parameters() if p.requires_grad]}]


def _build_optimizer(module: torch.nn.Module, config: Any) -> torch.optim.Optimizer:
    cls, init_args, options = _parse(config, "optimizer", _OPTIMIZER_KEYS, torch.optim.Optimizer)
    groups = _param_groups(module)
    groups = list(groups) if isinstance(groups, (list, tuple)) else [{"params": list(groups)}]
    if groups and not isinstance(groups[0], Mapping):
        groups = [{"params": groups}]
    if check_bool("optimizer.no_decay_bias_and_norm", options.get("no_decay_bias_and_norm", False)):
        if "weight_decay" not in _parameters(cls):
            raise ValueError(
                f"`optimizer.no_decay_bias_and_norm` needs an optimizer with `weight_decay`, but {cls.__name__} "
                "has none; remove the key."
            )
        default_decay = init_args.get("weight_decay", _parameters(cls)["weight_decay"].default)
        groups = _split_decay(groups, _no_decay_ids(module), default_decay)
    return _construct(cls, (groups,), init_args, "optimizer")


def _build_scheduler(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, config: Any, where: str = "lr_scheduler"
) -> dict:
    cls, init_args, options = _parse(config, where, _SCHEDULER_KEYS, LRScheduler)
    default_interval = getattr(cls, "interval", "step" if cls.__module__.startswith("lightopt.") else "epoch")
    interval = check_choice(f"{where}.interval", options.get("interval") or default_interval, ("step", "epoch"))
    frequency = check_int(f"{where}.frequency", 1 if options.get("frequency") is None else options["frequency"], 1)
    if "tau" in _parameters(cls) and init_args.get("tau") is None:
        init_args["tau"] = _run_length(module, interval, frequency, where)
    for key, value in init_args.items():  # nested schedules, e.g. WarmupThen's `after`
        if isinstance(value, Mapping) and "class_path" in value:
            sub_cls, sub_args, _ = _parse(value, f"{where}.init_args.{key}", _SCHEDULER_KEYS[:2], LRScheduler)
            if "tau" in _parameters(sub_cls) and sub_args.get("tau") is None:
                total = _run_length(module, interval, frequency, where)
                sub_args["tau"] = max(1, total - init_args.get("warmup_steps", 0))
            init_args[key] = functools.partial(sub_cls, **sub_args)
    if issubclass(cls, ReduceLROnPlateau):
        options.setdefault("monitor", "val_loss")
        if not isinstance(options["monitor"], str) or not options["monitor"]:
            raise ValueError(
                f"`{where}.monitor` must name a logged metric for ReduceLROnPlateau, e.g. 'val_loss', "
                f"but got monitor={options['monitor']!r}."
            )
    scheduler = _construct(cls, (optimizer,), init_args, where)
    extra = {k: options[k] for k in ("monitor", "strict", "name") if k in options}
    return {"scheduler": scheduler, "interval": interval, "frequency": frequency, **extra}


def _run_length(module: torch.nn.Module, interval: str, frequency: int, where: str) -> int:
    try:
        trainer = getattr(module, "trainer", None)
    except RuntimeError:  # not attached to a Trainer
        trainer = None
    total = None
    if trainer is not None:
        total = trainer.estimated_stepping_batches if interval == "step" else trainer.max_epochs
    if total is None or not math.isfinite(total) or total < 1:
        raise ValueError(
            f"`{where}.init_args.tau` is not set and the run length is unknown: set `tau`, or fit with a "
            "Trainer that has `max_steps` or `max_epochs` (tau defaults to the total optimizer steps)."
        )
    return max(1, int(total) // frequency)


def _parse(config: Any, where: str, keys: tuple[str, ...], base: type) -> tuple[type, dict[str, Any], dict[str, Any]]:
    """Split a config dict into (class, init args, options), checking the class."""
    if not isinstance(config, Mapping) or not isinstance(config.get("class_path"), str):
        raise TypeError(f"`{where}` must be a dict with a string `class_path` and `init_args`, but got {config!r}.")
    init_args = config.get("init_args") or {}
    if not isinstance(init_args, Mapping):
        raise TypeError(f"`{where}.init_args` must be a dict, but got {init_args!r}.")
    init_args = copy.deepcopy({**init_args, **{k: v for k, v in config.items() if k not in keys}})
    cls = _resolve(config["class_path"], where)
    if not inspect.isclass(cls) or not issubclass(cls, base):
        kind = "torch.optim.Optimizer" if base is torch.optim.Optimizer else "torch.optim.lr_scheduler.LRScheduler"
        raise TypeError(f"`{where}.class_path` must name a {kind} class, but {config['class_path']!r} is {cls!r}.")
    return cls, init_args, {k: config[k] for k in keys[2:] if k in config}


def _resolve(path: str, where: str) -> Any:
    known = _known_classes()
    if "." not in path:
        matches = [full for full in known if full.rsplit(".", 1)[1] == path]
        if len(matches) == 1:
            return known[matches[0]]
        if len(matches) > 1:
            listed = ", ".join(matches)
            raise ValueError(f"`{where}.class_path` {path!r} is ambiguous; use any of the following: {listed}.")
    else:
        module_name, _, name = path.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if not (error.name and module_name.startswith(error.name)):
                raise
        else:
            if hasattr(module, name):
                return getattr(module, name)
            known.update({f"{module_name}.{n}": None for n in dir(module) if not n.startswith("_")})
    close = difflib.get_close_matches(path, [*known, *{k.rsplit(".", 1)[1] for k in known}], n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"`{where}.class_path` {path!r} names no class that can be imported.{hint}")


@functools.cache
def _known_module_classes(module_name: str) -> tuple[tuple[str, type], ...]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", dir(module))
    classes = ((n, getattr(module, n, None)) for n in names)
    return tuple((f"{module_name}.{n}", c) for n, c in classes if inspect.isclass(c))


def _known_classes() -> dict[str, Any]:
    """Full path -> class for the optimizers and schedules of lightopt and torch (short names resolve here)."""
    found: dict[str, Any] = {}
    for module_name in _SEARCHED:
        for full, cls in _known_module_classes(module_name):
            if cls not in _BASES and issubclass(cls, _BASES):
                found[full] = cls
    return found


def _parameters(cls: type) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(cls).parameters


def _construct(cls: type, args: tuple, init_args: dict[str, Any], where: str) -> Any:
    parameters = _parameters(cls)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        for key in init_args:
            if key not in parameters:
                close = difflib.get_close_matches(key, list(parameters)[len(args):], n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"{where}.init_args: {cls.__name__} has no argument {key!r}.{hint}")
    try:
        return cls(*args, **init_args)
    except (TypeError, ValueError) as error:
        raise (TypeError if isinstance(error, TypeError) else ValueError)(f"{where}.init_args: {error}") from error


def _no_decay_ids(module: torch.nn.Module) -> set[int]:
    """ids of biases and of the parameters of normalization layers."""
    ids = set()
    for submodule in module.modules():
        norm = "Norm" in type(submodule).__name__
        for name, param in submodule.named_parameters(recurse=False):
            if norm or name == "bias" or name.endswith("_bias"):
                ids.add(id(param))
    return ids


def _split_decay(groups: list[Mapping[str, Any]], no_decay: set[int], default_decay: float) -> list[dict[str, Any]]:
    split = []
    for group in groups:
        params = [group["params"]] if isinstance(group["params"], torch.Tensor) else list(group["params"])
        if group.get("weight_decay", default_decay) == 0:
            split.append({**group, "params": params})
            continue
        decay = [p for p in params if id(p) not in no_decay]
        skip = [p for p in params if id(p) in no_decay]
        split += [{**group, "params": decay}] if decay else []
        split += [{**group, "params": skip, "weight_decay": 0.0}] if skip else []
    return split
