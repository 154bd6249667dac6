"""lightopt: chapter 8 of Goodfellow, Bengio & Courville's *Deep Learning* for PyTorch Lightning."""

from lightopt import optim
from lightopt.mixin import ConfigureOptimizersMixin

__version__ = "0.1.0"

__all__ = ["optim", "ConfigureOptimizersMixin", "__version__"]
