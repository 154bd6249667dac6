"""Lightning callbacks for lightopt, one per module."""

from lightopt.callbacks.early_stopping import EarlyStopping
from lightopt.callbacks.initialization import Initialization

__all__ = ["EarlyStopping", "Initialization"]
