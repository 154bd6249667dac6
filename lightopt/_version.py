"""lightopt's version, written once: ``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``) and
``lightopt.__version__`` re-exports it."""

__all__ = ["__version__"]

__version__ = "0.1.0"
