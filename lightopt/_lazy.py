"""Names of a package imported on first use (PEP 562): the one loader behind every lazy ``__init__``.

``import lightopt`` and the commands that read no model (``lightopt --help``, ``sweep show``,
``sweep best``) import neither torch nor Lightning, which take seconds. A lazy package lists
``name -> module`` in a table and takes its ``__getattr__`` and ``__dir__`` from
:func:`lazy_attributes`; its ``__all__`` and its ``if TYPE_CHECKING:`` imports say the same names
for readers and type checkers.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, table: Mapping[str, str], exported: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose names ``table`` maps to the modules that hold them.

    A name whose module is ``package.name`` itself is that module (``"optim": "lightopt.optim"``).
    Each name is imported once, on first use, and then kept in the package; an exception raised by
    the import (``KeyboardInterrupt`` included) reaches the caller unchanged.

    Example:
        >>> getattr_, dir_ = lazy_attributes("lightopt", {"schedules": "lightopt.schedules"}, ["schedules"])
        >>> getattr_("schedules").__name__
        'lightopt.schedules'
        >>> "schedules" in dir_()
        True
    """
    names = set(exported)

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(table[name])
        value = module if table[name] == f"{package}.{name}" else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | names)

    return __getattr__, __dir__
