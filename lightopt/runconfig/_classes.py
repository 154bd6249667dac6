"""Class paths: import with a "did you mean", short optimizer/schedule names, and the trust guard.

A config's class paths are imported and called, so a config is code and must be trusted like a
script. As a guard against mistakes (not a sandbox), class paths into the standard library's
process, shell and file-system modules are refused: no model, datamodule, optimizer, callback or
logger lives there, and a ``subprocess.Popen`` given as a search choice would run a command.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from typing import Any

from lightopt._validation import did_you_mean

__all__ = [
    "REFUSED_MODULES",
    "check_trusted",
    "did_you_mean",
    "import_class",
    "import_object",
    "init_parameters",
    "optimizer_class_paths",
    "resolve_class",
]

REFUSED_MODULES = frozenset(
    {
        "builtins",
        "code",
        "codeop",
        "ctypes",
        "glob",
        "importlib",
        "io",
        "multiprocessing",
        "os",
        "pathlib",
        "pdb",
        "pty",
        "runpy",
        "shlex",
        "shutil",
        "signal",
        "socket",
        "subprocess",
        "sys",
        "tempfile",
        "webbrowser",
    }
)
# Searched for short names (``"LinearDecay"``, ``"StepLR"``), as the mixin's dicts and jsonargparse allow.
_SHORT_NAME_MODULES = ("lightopt.optim", "lightopt.schedules", "torch.optim", "torch.optim.lr_scheduler")


def check_trusted(path: str, where: str) -> None:
    """Refuse a class path into :data:`REFUSED_MODULES` (``ValueError`` naming ``where``)."""
    root = path.split(".", 1)[0]
    if root in REFUSED_MODULES or path.startswith("_"):
        raise ValueError(
            f"`{where}` {path!r} is in the standard library's {root!r} module, which lightopt refuses in configs "
            "(processes, shells and files are not models, data, optimizers, callbacks or loggers); a config runs "
            "the code its class paths name, so use only classes you trust."
        )


def import_object(path: Any, where: str) -> Any:
    """The object ``path`` names (``"examples.digits.DigitsMLP"``), class or not.

    ``ValueError`` naming ``where`` if there is none.

    The one class-path importer: the trust guard, the missing module and the "did you mean" are here.
    """
    if not isinstance(path, str) or "." not in path.strip("."):
        raise ValueError(
            f"`{where}` must be a dotted class path such as 'examples.digits.DigitsMLP', but got {path!r}."
        )
    check_trusted(path, where)
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):  # the module itself is missing, not its dependency
            raise ValueError(
                f"`{where}` {path!r} names no class that can be imported: no module {error.name!r} (class paths "
                "are imported from the current directory and PYTHONPATH)."
            ) from None
        raise
    found = getattr(module, name, None)
    if found is None:
        names = [n for n in dir(module) if not n.startswith("_") and inspect.isclass(getattr(module, n))]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{module_name}.{close[0]}'?" if close else ""
        raise ValueError(f"`{where}` {path!r} names no class that can be imported.{hint}")
    return found


def import_class(path: Any, where: str) -> type:
    """The class ``path`` names (:func:`import_object`); ``ValueError`` naming ``where`` if none or not a class."""
    cls = import_object(path, where)
    if not inspect.isclass(cls):
        raise ValueError(f"`{where}` must name a class, but {path!r} is {type(cls).__name__}.")
    return cls


def resolve_class(path: Any, where: str) -> type:
    """:func:`import_class`, also taking the short name of a lightopt or torch optimizer or schedule.

    ``"SGD"`` is both lightopt's and torch's, so it is ambiguous: give the full path.
    """
    if not (isinstance(path, str) and path and "." not in path):
        return import_class(path, where)
    known = _short_names()
    matches = known.get(path, ())
    if len(matches) == 1:
        return import_class(matches[0], where)
    if len(matches) > 1:
        raise ValueError(f"`{where}` {path!r} is ambiguous; use any of the following: {', '.join(matches)}.")
    raise ValueError(f"`{where}` {path!r} names no class that can be imported.{did_you_mean(path, known)}")


def optimizer_class_paths() -> tuple[str, ...]:
    """The full class paths of lightopt's and torch's optimizers and schedules."""
    return tuple(path for paths in _short_names().values() for path in paths)


@functools.cache
def _short_names() -> dict[str, tuple[str, ...]]:
    """Short name -> full paths of the optimizers and schedules of lightopt and torch."""
    import torch

    bases = (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)
    found: dict[str, list[str]] = {}
    for module_name in _SHORT_NAME_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", dir(module)):
            cls = getattr(module, name, None)
            if inspect.isclass(cls) and cls not in bases and issubclass(cls, bases):
                found.setdefault(name, []).append(f"{module_name}.{name}")
    return {name: tuple(paths) for name, paths in found.items()}


def init_parameters(cls: type) -> dict[str, inspect.Parameter] | None:
    """The keyword parameters of ``cls.__init__``, or None when it takes ``**kwargs`` (anything goes)."""
    parameters = dict(inspect.signature(cls).parameters)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return {k: p for k, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}
