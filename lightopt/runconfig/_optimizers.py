"""An optimizer and its schedules from LightningCLI-style dicts, as ``configure_optimizers`` returns them.

The one builder behind :class:`lightopt.ConfigureOptimizersMixin` (the module's own ``optimizer`` and
``lr_scheduler`` arguments) and behind a run config's top-level ``optimizer``/``lr_scheduler``
(``lightopt fit``, sweeps), which replace a LightningModule's ``configure_optimizers`` as in LightningCLI.
What it adds to LightningCLI's own ``configure_optimizers``: param groups from the module's
``optimizer_param_groups()``, ``interval="step"`` for lightopt's schedules (their ``interval``
attribute), ``tau`` from the run length, short class names, a list of schedules, and the keys
``no_decay_bias_and_norm``, ``interval``, ``frequency``, ``monitor``, ``strict``, ``name`` in the mixin's
dicts. A ``lightning.pytorch.cli.ReduceLROnPlateau`` is monitored on its own ``monitor``, as in LightningCLI.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from lightopt._validation import check_bool, check_choice, check_int
from lightopt.runconfig._classes import did_you_mean, import_object, optimizer_class_paths, resolve_class

__all__ = ["OPTIMIZER_KEYS", "SCHEDULER_KEYS", "optimizers_from_config", "split_class_config"]

OPTIMIZER_KEYS = ("class_path", "init_args", "no_decay_bias_and_norm")
SCHEDULER_KEYS = ("class_path", "init_args", "interval", "frequency", "monitor", "strict", "name")


def optimizers_from_config(module: torch.nn.Module, optimizer_config: Any, scheduler_config: Any = None) -> Any:
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
    cls, init_args, options = split_class_config(config, "optimizer", OPTIMIZER_KEYS, torch.optim.Optimizer)
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
    cls, init_args, options = split_class_config(config, where, SCHEDULER_KEYS, LRScheduler)
    default_interval = getattr(cls, "interval", "step" if cls.__module__.startswith("lightopt.") else "epoch")
    interval = check_choice(f"{where}.interval", options.get("interval") or default_interval, ("step", "epoch"))
    frequency = check_int(f"{where}.frequency", 1 if options.get("frequency") is None else options["frequency"], 1)
    if "tau" in _parameters(cls) and init_args.get("tau") is None:
        init_args["tau"] = _run_length(module, interval, frequency, where)
    for key, value in init_args.items():  # nested schedules, e.g. WarmupThen's `after`
        if isinstance(value, Mapping) and "class_path" in value:
            sub_cls, sub_args, _ = split_class_config(
                value, f"{where}.init_args.{key}", SCHEDULER_KEYS[:2], LRScheduler
            )
            if "tau" in _parameters(sub_cls) and sub_args.get("tau") is None:
                total = _run_length(module, interval, frequency, where)
                sub_args["tau"] = max(1, total - init_args.get("warmup_steps", 0))
            init_args[key] = functools.partial(sub_cls, **sub_args)
    if issubclass(cls, ReduceLROnPlateau):
        if "monitor" not in options and isinstance(init_args.get("monitor"), str):
            options["monitor"] = init_args["monitor"]  # lightning.pytorch.cli.ReduceLROnPlateau's own argument
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


def split_class_config(
    config: Any, where: str, keys: tuple[str, ...], base: type
) -> tuple[type, dict[str, Any], dict[str, Any]]:
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
    """The object ``path`` names (a non-class too, for the caller's type message), with a "did you mean"."""
    try:
        return resolve_class(path, f"{where}.class_path")
    except ValueError as error:
        message = str(error)
        if "must name a class" in message:
            return import_object(path, f"{where}.class_path")
        hint = did_you_mean(path, optimizer_class_paths()) if "Did you mean" not in message else ""
        if hint:
            raise ValueError(f"`{where}.class_path` {path!r} names no class that can be imported.{hint}") from None
        raise


def _parameters(cls: type) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(cls).parameters


def _construct(cls: type, args: tuple, init_args: dict[str, Any], where: str) -> Any:
    parameters = _parameters(cls)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        for key in init_args:
            if key not in parameters:
                hint = did_you_mean(key, list(parameters)[len(args) :])
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
