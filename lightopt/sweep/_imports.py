"""Import a class from its dotted ``class_path``, with a suggestion when it names nothing."""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any


def import_class(path: Any, where: str) -> type:
    """The class ``path`` names (``"examples.digits.DigitsMLP"``); ``ValueError`` naming ``where`` if none."""
    if not isinstance(path, str) or "." not in path.strip("."):
        raise ValueError(f"`{where}` must be a dotted class path such as 'examples.digits.DigitsMLP', but got {path!r}.")
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):  # the module itself is missing, not its dependency
            raise ValueError(f"`{where}` {path!r} names no class that can be imported: no module {error.name!r}.") from None
        raise
    cls = getattr(module, name, None)
    if cls is None:
        names = [n for n in dir(module) if not n.startswith("_") and inspect.isclass(getattr(module, n))]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{module_name}.{close[0]}'?" if close else ""
        raise ValueError(f"`{where}` {path!r} names no class that can be imported.{hint}")
    if not inspect.isclass(cls):
        raise ValueError(f"`{where}` must name a class, but {path!r} is {type(cls).__name__}.")
    return cls


def init_parameters(cls: type) -> dict[str, inspect.Parameter] | None:
    """The keyword parameters of ``cls.__init__``, or None when it takes ``**kwargs`` (anything goes)."""
    parameters = dict(inspect.signature(cls).parameters)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return {k: p for k, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def suggest(name: str, candidates: Any) -> str:
    """`` Did you mean 'x'?`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
