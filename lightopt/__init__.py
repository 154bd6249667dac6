"""lightopt: chapter 8 of Goodfellow, Bengio & Courville's *Deep Learning* for PyTorch Lightning."""

from lightopt import callbacks, init, optim, schedules
from lightopt.mixin import ConfigureOptimizersMixin
from lightopt.pretraining import greedy_layerwise_pretraining
from lightopt.retrain import continue_on_all_data, retrain_on_all_data

__version__ = "0.1.0"

__all__ = [
    "ConfigureOptimizersMixin",
    "__version__",
    "callbacks",
    "continue_on_all_data",
    "greedy_layerwise_pretraining",
    "init",
    "optim",
    "retrain_on_all_data",
    "schedules",
]
