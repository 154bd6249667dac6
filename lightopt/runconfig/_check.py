"""Checking a run config: lightopt's one-line messages first, then LightningCLI's parser, which has the last word.

lightopt's own checks catch the common mistakes with a "did you mean" (an unknown key, a class path
that imports nothing or points into a refused module, an argument a class does not take, a
Trainer argument misspelt); everything else, types included, is decided by the LightningCLI parser,
so a config is accepted exactly when ``python main.py fit --config`` would accept it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightopt._validation import check_known_keys, did_you_mean
from lightopt.runconfig._classes import init_parameters, resolve_class
from lightopt.runconfig._keys import class_nodes
from lightopt.runconfig._lightning_cli import FIT_KEYS, CliSpec, check_with_lightning_cli

__all__ = ["RUN_KEYS", "check_run_config"]

RUN_KEYS = ("model", "data", "trainer", "optimizer", "lr_scheduler", "seed_everything")
_CLASS_KEYS = ("class_path", "init_args", "dict_kwargs")


def check_run_config(run: Mapping[str, Any], spec: CliSpec = CliSpec(), extra_keys: tuple[str, ...] = ()) -> None:
    """Raise ``ValueError``/``TypeError`` (message naming the dotted key in backticks) unless ``run`` is a valid config.

    ``extra_keys`` are top-level keys the caller reads itself (a sweep file's ``study``, ``search``).
    """
    if not isinstance(run, Mapping):
        raise TypeError(f"the file must be a mapping with `model` (and `data`, `trainer`, ...), but got {run!r}.")
    if spec.cli_class is None:  # a project's own LightningCLI subclass may add keys: its parser decides
        check_known_keys(run, (*extra_keys, *RUN_KEYS, *FIT_KEYS))
    if spec.model_class is None:
        if run.get("model") is None:
            raise ValueError(
                "the file has no `model`: add `model: {class_path: ..., init_args: {...}}`, or give the "
                "module's class as `lightning_cli: {model_class: ...}` for a LightningCLI(Model) project."
            )
        if not isinstance(run["model"], Mapping) or "class_path" not in run["model"]:
            raise TypeError(
                f"`model` must be a mapping with `class_path` and `init_args`, but got {run['model']!r}; for "
                "a LightningCLI(Model) project give the class as `lightning_cli: {model_class: ...}`."
            )
    for key, fixed in (("model", spec.model_class), ("data", spec.datamodule_class)):
        mode = spec.subclass_mode_model if key == "model" else spec.subclass_mode_data
        if fixed is not None and not mode and isinstance(run.get(key), Mapping) and "class_path" in run[key]:
            raise ValueError(
                f"`{key}` must be a mapping of init args for the fixed class {fixed} (LightningCLI(Model, "
                f"DataModule)), but it has a `class_path`: give only its init_args, or drop the fixed class."
            )
    trainer = run.get("trainer") or {}
    if not isinstance(trainer, Mapping):
        raise TypeError(f"`trainer` must be a mapping of Trainer arguments, but got {trainer!r}.")
    import lightning

    trainer_arguments = init_parameters(lightning.Trainer) or {}
    for key in trainer:
        if key not in trainer_arguments:
            raise ValueError(f"`trainer.{key}` is not a Trainer argument.{did_you_mean(key, trainer_arguments)}")
    for where in ("model", "data", "optimizer", "lr_scheduler"):
        _check_component_keys(run.get(where), where)
    for where, node in class_nodes(run, ""):
        _check_class_node(node, where)
    check_with_lightning_cli({k: v for k, v in run.items() if k not in extra_keys}, spec)


def _check_component_keys(config: Any, where: str) -> None:
    if not isinstance(config, Mapping) or "class_path" not in config:
        return
    check_known_keys(
        config, _CLASS_KEYS, where, listed="class_path, init_args (LightningCLI takes no other key beside a class_path)"
    )


def _check_class_node(node: Mapping[str, Any], where: str) -> None:
    cls = resolve_class(node["class_path"], f"{where}.class_path")
    init_args = node.get("init_args")
    if init_args is None:
        return
    if not isinstance(init_args, Mapping):
        raise TypeError(f"`{where}.init_args` must be a mapping, but got {init_args!r}.")
    parameters = init_parameters(cls)
    if parameters is None:
        return
    for key in init_args:
        if key not in parameters:
            raise ValueError(
                f"`{where}.init_args.{key}` is not an argument of {cls.__name__}.{did_you_mean(key, parameters)}"
            )
