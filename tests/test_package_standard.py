"""The package's own rules, held by a test: private names stay private, public modules say what they export
(``__all__``), the version is written once.

Import-linter (``lint-imports``, contracts in pyproject.toml) holds the layers and keeps private *modules* inside
their package; it does not see names. This test reads every Python file of the repository with ``ast`` and fails
on a private name (``_x``, not ``__x__``) of lightopt used where it does not belong:

- inside ``lightopt/``: a private module ``lightopt.p._m`` is used only from inside its package ``lightopt.p``
  (its ``__init__`` and siblings, however deep), and a private name of a module (``from lightopt.p.m import _x``,
  ``m._x``) never leaves that module: if two modules need it, it is public in the lower one (STYLE.md);
- outside ``lightopt/`` (benchmarks, examples, sweeps, tests): no private name or module at all, except in the unit
  test of a private module, which mirrors its path (``tests/optim/test_second_order.py`` tests
  ``lightopt/optim/_second_order.py``, ``tests/test_compat.py`` tests ``lightopt/_compat.py``).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import lightopt

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".git", ".venv", "build", "dist", "__pycache__", "lightning_logs", "runs"}


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _is_module(dotted: str, root: Path = ROOT) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _module_name(relative: Path) -> str:
    """``lightopt/optim/sgd.py`` -> ``lightopt.optim.sgd``; ``lightopt/optim/__init__.py`` -> ``lightopt.optim``."""
    parts = list(relative.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lightopt_names_used(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """``(line, dotted name)`` for each lightopt module or name the source imports or reads off an imported module."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> the lightopt module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "lightopt":
                    yield node.lineno, alias.name
                    bound[alias.asname or "lightopt"] = alias.name if alias.asname else "lightopt"
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            if base.split(".")[0] != "lightopt":
                continue
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
                if _is_module(f"{base}.{alias.name}"):
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                yield node.lineno, ".".join([bound[value.id], *chain])


def _mirrored_private_module(relative: Path) -> str | None:
    """The private module a test file is the unit test of: ``tests/a/test_b.py`` -> ``lightopt.a._b``."""
    if relative.parts[0] != "tests" or not relative.name.startswith("test_"):
        return None
    return ".".join(["lightopt", *relative.parts[1:-1], "_" + relative.stem.removeprefix("test_")])


def _misplaced_private(dotted: str, importer: str | None, tested: str | None) -> str | None:
    """The private module or name in ``dotted`` that ``importer`` (a lightopt module, or None outside lightopt)
    may not use; None when every private part of it is allowed there."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not _private(part):
            continue
        used = ".".join(parts[: i + 1])
        if tested is not None and (used == tested or used.startswith(tested + ".")):
            return None  # the unit test of this private module uses it and what is inside it
        if _is_module(used):
            owner = ".".join(parts[:i])
            if importer is None or not (importer == owner or importer.startswith(owner + ".")):
                return used
        else:
            return used  # another module's private name: never allowed
    return None


def _python_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if not SKIPPED_DIRS.intersection(relative.parts):
            yield relative


def _misplaced_private_uses() -> list[str]:
    found = set()
    for relative in _python_files():
        inside = relative.parts[0] == "lightopt"
        importer = _module_name(relative) if inside else None
        tested = None if inside else _mirrored_private_module(relative)
        source = (ROOT / relative).read_text(encoding="utf-8")
        for _, dotted in _lightopt_names_used(source, importer or "", relative.name == "__init__.py"):
            misplaced = _misplaced_private(dotted, importer, tested)
            if misplaced is not None:
                found.add(f"{relative.as_posix()}: {misplaced}")
    return sorted(found)


def test_no_private_name_of_lightopt_is_used_outside_its_module_or_package():
    found = _misplaced_private_uses()
    assert found == [], (
        "private names used outside their module (or private modules outside their package): make the name public "
        f"in the lower module that owns it, or use the package's public API: {found}"
    )


@pytest.mark.parametrize(
    ("source", "importer", "relative", "misplaced"),
    [
        # a private name never leaves its module, not even to a sibling
        (
            "from lightopt.sweep.runner import _Progress",
            "lightopt.sweep.workers",
            None,
            "lightopt.sweep.runner._Progress",
        ),
        ("from lightopt import init\ninit._check_gain(1)", "lightopt.callbacks.x", None, "lightopt.init._check_gain"),
        (
            "import lightopt.init\nlightopt.init._check_gain(1)",
            "lightopt.callbacks.x",
            None,
            "lightopt.init._check_gain",
        ),
        # a private module: from inside its package (siblings, __init__, deeper), not from another package
        ("from lightopt.optim import _common", "lightopt.optim.sgd", None, None),
        ("from lightopt.optim._common import check_refused", "lightopt.optim", None, None),
        ("from . import _common", "lightopt.optim.sgd", None, None),
        ("from lightopt.optim import _common", "lightopt.callbacks.x", None, "lightopt.optim._common"),
        ("import lightopt.optim._common", "lightopt.callbacks.x", None, "lightopt.optim._common"),
        ("from lightopt._validation import check_int", "lightopt.sweep.config", None, None),
        # a private module's private name: not even from its own package
        ("from lightopt.optim._common import _x", "lightopt.optim.sgd", None, "lightopt.optim._common._x"),
        # outside lightopt: nothing private, except in the unit test of that private module
        ("from lightopt._validation import check_int", None, "benchmarks/x.py", "lightopt._validation"),
        ("from lightopt.optim import _second_order", None, "tests/optim/test_sgd.py", "lightopt.optim._second_order"),
        ("from lightopt.optim import _second_order as so\nso._x", None, "tests/optim/test_second_order.py", None),
        ("from lightopt import _compat\n_compat._entry_points", None, "tests/test_compat.py", None),
        ("from lightopt import optim\noptim.SGD", None, "examples/x.py", None),
    ],
)
def test_the_private_name_check_accepts_and_rejects(source, importer, relative, misplaced):
    tested = None if relative is None else _mirrored_private_module(Path(relative))
    found = [
        _misplaced_private(dotted, importer, tested)
        for _, dotted in _lightopt_names_used(source, importer or "", is_package=importer == "lightopt.optim")
    ]
    assert [name for name in found if name is not None] == ([] if misplaced is None else [misplaced])


def _public_modules() -> Iterator[str]:
    yield "lightopt"
    for info in pkgutil.walk_packages(lightopt.__path__, "lightopt."):
        if not any(_private(part) for part in info.name.split(".")):
            yield info.name


@pytest.mark.parametrize("name", sorted(_public_modules()))
def test_every_public_module_says_what_it_exports(name):
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), (list, tuple)), f"{name} has no __all__"
    missing = [export for export in module.__all__ if not hasattr(module, export)]
    assert missing == [], f"{name}.__all__ lists names it does not have: {missing}"


def test_the_version_is_written_once():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lightopt._version.__version__"}
    written = {
        relative.as_posix(): ast.literal_eval(node.value)
        for relative in _python_files()
        if relative.parts[0] == "lightopt"
        for node in ast.walk(ast.parse((ROOT / relative).read_text(encoding="utf-8")))
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "__version__" for target in node.targets)
    }
    assert written == {"lightopt/_version.py": lightopt.__version__}
