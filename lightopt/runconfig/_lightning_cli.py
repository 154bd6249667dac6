"""The run config parsed, checked and instantiated by LightningCLI itself.

A run config is what ``python main.py fit --config FILE`` reads: ``model``, ``data``, ``trainer``,
``optimizer``, ``lr_scheduler``, ``seed_everything`` (and ``ckpt_path``, ``weights_only``, which
``fit`` takes). lightopt hands it to the project's ``LightningCLI`` (Lightning's own by default,
``pytorch_lightning``'s for modules built on that package) with ``run=False``, so nested
``class_path`` objects, types, defaults, linked arguments and ``seed_everything`` mean exactly what
they mean under LightningCLI. What lightopt adds: the top-level ``optimizer``/``lr_scheduler``
become ``configure_optimizers`` through :func:`~lightopt.runconfig.optimizers_from_config` (τ from
the run length, ``interval="step"`` for lightopt's schedules), its callbacks and its TensorBoard
logger go beside the config's own, and its quiet trial settings are defaults that the config (an
explicit null included) overrides.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import types
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lightopt._compat import lightning_entry_points_read_once
from lightopt.runconfig._classes import import_class, init_parameters, resolve_class
from lightopt.runconfig._optimizers import optimizers_from_config
from lightopt.runconfig._translate import parser_error_message

__all__ = ["FIT_KEYS", "CliSpec", "Run", "build", "check_with_lightning_cli", "cli_class_for"]

FIT_KEYS = ("ckpt_path", "weights_only")  # arguments of `fit` that `main.py fit --print_config` prints
_PLACEHOLDER_TAU = 1


@dataclass(frozen=True)
class CliSpec:
    """Which LightningCLI reads the run config, as a project's ``main.py`` calls it.

    ``cli_class``: the project's ``LightningCLI`` subclass (linked or added arguments), default
    Lightning's own (``pytorch_lightning``'s for a module built on that package). ``model_class`` and
    ``datamodule_class``: the classes of ``LightningCLI(Model, DataModule)``, whose config holds only
    their init args under ``model:``/``data:``; ``subclass_mode_model``/``subclass_mode_data`` as in
    LightningCLI. Without ``model_class`` the config names its classes (``class_path``).
    """

    cli_class: str | None = None
    model_class: str | None = None
    datamodule_class: str | None = None
    subclass_mode_model: bool = False
    subclass_mode_data: bool = False

    @property
    def fixed_model(self) -> bool:
        return self.model_class is not None and not self.subclass_mode_model


@dataclass
class Run:
    """The objects a run config builds; ``datamodule`` is None when the module has its own loaders.

    ``fit_kwargs`` are the config's ``ckpt_path``/``weights_only`` for ``trainer.fit``.
    """

    model: Any
    datamodule: Any
    trainer: Any
    fit_kwargs: dict[str, Any]

    def fit(self, **kwargs: Any) -> None:
        """``trainer.fit`` of the model and datamodule; ``kwargs`` override the config's ``ckpt_path``, ..."""
        self.trainer.fit(self.model, datamodule=self.datamodule, **{**self.fit_kwargs, **kwargs})


def cli_class_for(run: Mapping[str, Any], spec: CliSpec) -> type:
    """The LightningCLI class for ``run``: the spec's, else ``pytorch_lightning``'s for a module of that package."""
    if spec.cli_class is not None:
        from lightning.pytorch.cli import LightningCLI

        cls = import_class(spec.cli_class, "lightning_cli.class_path")
        if not any(c.__name__ == "LightningCLI" for c in cls.__mro__):
            raise TypeError(
                f"`lightning_cli.class_path` must name a LightningCLI subclass, but {spec.cli_class!r} is not "
                f"one (e.g. {LightningCLI.__module__}.LightningCLI)."
            )
        return cls
    model = run.get("model")
    path = spec.model_class or (model.get("class_path") if isinstance(model, Mapping) else None)
    if isinstance(path, str) and _is_pytorch_lightning(resolve_class(path, "model.class_path")):
        from pytorch_lightning.cli import LightningCLI as PLCLI

        return PLCLI
    from lightning.pytorch.cli import LightningCLI

    return LightningCLI


def _is_pytorch_lightning(cls: type) -> bool:
    return any(c.__module__.startswith("pytorch_lightning.") for c in cls.__mro__)


@functools.cache
def _runner_class(base: type) -> type:
    """``base`` with ``instantiate_classes`` doing lightopt's build (or nothing, to check only)."""

    class _LightoptRun(base):  # type: ignore[misc, valid-type]
        # A sweep builds many configs with one parser: its set-up is most of the cost.
        parsers: ClassVar[dict[Any, Any]] = {}

        def __init__(self, *args: Any, lightopt_job: dict[str, Any] | None = None, **kwargs: Any) -> None:
            self.lightopt_job = lightopt_job
            super().__init__(*args, **kwargs)

        def setup_parser(
            self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
        ) -> None:
            key = (
                add_subcommands,
                repr(main_kwargs),
                repr(subparser_kwargs),
                self.model_class,
                self.datamodule_class,
                self.subclass_mode_model,
                self.subclass_mode_data,
                repr(sorted(self.trainer_defaults.items())),
            )
            if key in self.parsers:
                self.parser = self.parsers[key]
                return
            super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
            if len(self.parsers) >= 8:
                self.parsers.clear()
            self.parsers[key] = self.parser

        def instantiate_classes(self) -> None:
            job = self.lightopt_job
            if job is None:  # check only
                return
            self.config_init = self.parser.instantiate_classes(self.config)
            self.datamodule = self.config_init.get("data")
            self.model = self.config_init.get("model")
            if job["optimizer"] is not None:  # as the parser read them (types converted), less a stand-in τ
                optimizer, lr_scheduler = (_as_dict(self.config.get(key)) for key in ("optimizer", "lr_scheduler"))
                if job.get("tau_stand_in") and isinstance(lr_scheduler, dict):
                    lr_scheduler["init_args"].pop("tau", None)
                _replace_configure_optimizers(self.model, optimizer, lr_scheduler)
            bridged = [
                import_class(c["class_path"], "trainer.callbacks")(**(c.get("init_args") or {}))
                for c in job.get("bridged_callbacks", ())
            ]
            job = {**job, "callbacks": [*bridged, *job["callbacks"]]}
            self.trainer = self.instantiate_trainer(**_trainer_kwargs(self.config_init.get("trainer") or {}, job))

        def after_instantiate_classes(self) -> None:
            if self.lightopt_job is not None:
                super().after_instantiate_classes()

    _LightoptRun.__name__ = _LightoptRun.__qualname__ = base.__name__
    return _LightoptRun


def _as_dict(value: Any) -> Any:
    return value.as_dict() if hasattr(value, "as_dict") else value


def _trainer_kwargs(trainer: Mapping[str, Any], job: Mapping[str, Any]) -> dict[str, Any]:
    """The Trainer arguments lightopt sets beside the config's: callbacks appended, its logger beside the config's."""
    kwargs = dict(job["trainer_overrides"])
    callbacks = trainer.get("callbacks")
    callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    kwargs["callbacks"] = [*callbacks, *job["callbacks"]]
    logger, extra = trainer.get("logger"), job["logger"]
    if extra is not None and logger is not False:
        own = (
            [] if logger is None or logger is True else list(logger) if isinstance(logger, (list, tuple)) else [logger]
        )
        kwargs["logger"] = [extra, *own] if own else extra
    return kwargs


def _replace_configure_optimizers(model: Any, optimizer: Mapping[str, Any], lr_scheduler: Any) -> None:
    """Give ``model`` a ``configure_optimizers`` building ``optimizer`` and ``lr_scheduler`` (LightningCLI's rule)."""

    def configure_optimizers(self: Any) -> Any:
        return optimizers_from_config(self, optimizer, lr_scheduler)

    model.configure_optimizers = types.MethodType(configure_optimizers, model)


def _tau_stand_in(run: Mapping[str, Any]) -> bool:
    return _for_parser(run) != {k: v for k, v in run.items() if k not in FIT_KEYS}


def _for_parser(run: Mapping[str, Any]) -> dict[str, Any]:
    """``run`` as LightningCLI's parser takes it: no ``fit`` arguments, a stand-in for a τ lightopt computes."""
    config = {k: v for k, v in run.items() if k not in FIT_KEYS}
    scheduler = config.get("lr_scheduler")
    if isinstance(scheduler, Mapping) and isinstance(scheduler.get("class_path"), str):
        try:
            parameters = init_parameters(resolve_class(scheduler["class_path"], "lr_scheduler.class_path")) or {}
        except (TypeError, ValueError):
            parameters = {}
        init_args = dict(scheduler.get("init_args") or {})
        if "tau" in parameters and init_args.get("tau") is None:
            init_args["tau"] = _PLACEHOLDER_TAU  # τ comes from the run length when configure_optimizers runs
            config["lr_scheduler"] = {**scheduler, "init_args": init_args}
    return config


def _bridge_callbacks(run: Mapping[str, Any]) -> tuple[dict[str, Any], list[Mapping[str, Any]]]:
    """For a ``pytorch_lightning`` project: ``run`` without its ``lightning.pytorch`` callbacks, and those callbacks.

    ``pytorch_lightning``'s parser takes only its own package's callbacks, but its Trainer runs
    lightopt's (which are ``lightning.pytorch`` ones) unchanged: lightopt builds them itself, from
    their ``class_path`` and plain ``init_args``, and hands them to the Trainer.
    """
    trainer = run.get("trainer")
    callbacks = trainer.get("callbacks") if isinstance(trainer, Mapping) else None
    if not isinstance(callbacks, list):
        return dict(run), []
    from lightning.pytorch import Callback

    def foreign(config: Any) -> bool:
        if not (isinstance(config, Mapping) and isinstance(config.get("class_path"), str)):
            return False
        cls = import_class(config["class_path"], "trainer.callbacks")
        return issubclass(cls, Callback)

    bridged = [c for c in callbacks if foreign(c)]
    kept = [c for c in callbacks if not foreign(c)]
    return {**run, "trainer": {**trainer, "callbacks": kept or None}}, bridged


def _start(
    run: Mapping[str, Any], spec: CliSpec, job: dict[str, Any] | None, trainer_defaults: Mapping[str, Any]
) -> Any:
    """Construct the LightningCLI (``run=False``); jsonargparse's errors become ``ValueError`` naming the key."""
    from argparse import ArgumentError

    base = cli_class_for(run, spec)
    if base.__module__.startswith("pytorch_lightning."):
        run, bridged = _bridge_callbacks(run)
        if job is not None:
            job = {**job, "bridged_callbacks": bridged}
    kwargs: dict[str, Any] = {}
    if spec.model_class is not None:
        kwargs["model_class"] = import_class(spec.model_class, "lightning_cli.model_class")
        kwargs["subclass_mode_model"] = spec.subclass_mode_model
    if spec.datamodule_class is not None:
        kwargs["datamodule_class"] = import_class(spec.datamodule_class, "lightning_cli.datamodule_class")
        kwargs["subclass_mode_data"] = spec.subclass_mode_data
    shown = io.StringIO()
    seed_logs = [logging.getLogger(f"{package}.utilities.seed") for package in ("lightning.fabric", "lightning_fabric")]
    levels = [log.level for log in seed_logs]
    for log in seed_logs if job is None else ():  # checking a file says nothing about seeds
        log.setLevel(logging.WARNING)
    try:
        hide = contextlib.ExitStack()
        if job is None:  # checking prints nothing; building lets the project's own code print
            hide.enter_context(contextlib.redirect_stderr(shown))
            hide.enter_context(contextlib.redirect_stdout(shown))
        with hide, lightning_entry_points_read_once(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*args parameter is intended to run from within Python.*")
            warnings.filterwarnings("ignore", ".*skip_none parameter was deprecated.*")
            return _runner_class(base)(
                run=False,
                args=_for_parser(run),
                save_config_callback=None,
                trainer_defaults=dict(trainer_defaults),
                parser_kwargs={"exit_on_error": False},
                lightopt_job=job,
                **kwargs,
            )
    except ArgumentError as error:
        message, _ = parser_error_message(str(error), run)
        raise ValueError(message) from None
    except SystemExit:
        message, _ = parser_error_message(shown.getvalue().rpartition("error:")[2] or shown.getvalue())
        raise ValueError(message) from None
    finally:
        for log, level in zip(seed_logs, levels):
            log.setLevel(level)


def check_with_lightning_cli(run: Mapping[str, Any], spec: CliSpec = CliSpec()) -> None:
    """Parse ``run`` with the LightningCLI of ``spec`` without building anything; ``ValueError`` naming the key."""
    _start(run, spec, None, {})


def build(
    config: Mapping[str, Any],
    *,
    spec: CliSpec = CliSpec(),
    seed: int | None = None,
    callbacks: Sequence[Any] = (),
    logger: Any = None,
    trainer_overrides: Mapping[str, Any] | None = None,
    trainer_defaults: Mapping[str, Any] | None = None,
) -> Run:
    """Seed, then instantiate the run config's model, datamodule and Trainer through LightningCLI.

    ``seed`` replaces the config's ``seed_everything`` (LightningCLI's default, ``true``, draws a
    random seed and records it). ``callbacks`` go after the config's own; ``logger`` (lightopt's
    TensorBoard run) goes first, beside the config's loggers, unless the config says ``logger: false``;
    ``trainer_overrides`` replace the config's Trainer arguments; ``trainer_defaults`` are defaults that
    the config overrides, an explicit null included (null means Lightning's own default).
    """
    run = dict(config)
    if seed is not None:
        run["seed_everything"] = seed
    job = {
        "optimizer": run.get("optimizer"),
        "tau_stand_in": _tau_stand_in(run),
        "callbacks": list(callbacks),
        "logger": logger,
        "trainer_overrides": dict(trainer_overrides or {}),
    }
    cli = _start(run, spec, job, trainer_defaults or {})
    fit_kwargs = {key: run[key] for key in FIT_KEYS if run.get(key) is not None}
    built = Run(cli.model, cli.datamodule, cli.trainer, fit_kwargs)
    cli.__dict__.clear()  # the reused parser's instantiators refer to this object: keep no trial's objects alive
    return built
