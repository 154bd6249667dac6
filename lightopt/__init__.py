"""lightopt: chapter 8 of Goodfellow, Bengio & Courville's *Deep Learning* for PyTorch Lightning."""

from lightopt import optim

__version__ = "0.1.0"

__all__ = ["optim", "__version__"]
