"""lightopt: chapter 8 of Goodfellow, Bengio & Courville's *Deep Learning* for PyTorch Lightning."""

import signal
import sys

from lightopt._lazy import lazy_attributes
from lightopt._version import __version__

_COMMAND = sys.argv[0].endswith("lightopt") or sys.orig_argv[1:3] == ["-m", "lightopt"]
if _COMMAND and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # SIGTERM while torch imports: one line too

    def _terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, _terminated)

# Imported on first use (PEP 562), so that `import lightopt` and `lightopt --help` do not import torch
# and Lightning (seconds): `lightopt.optim`, `from lightopt import ConfigureOptimizersMixin`, ... work as usual.
_LAZY = {
    "callbacks": "lightopt.callbacks",
    "init": "lightopt.init",
    "optim": "lightopt.optim",
    "schedules": "lightopt.schedules",
    "ConfigureOptimizersMixin": "lightopt.mixin",
    "greedy_layerwise_pretraining": "lightopt.pretraining",
    "continue_on_all_data": "lightopt.retrain",
    "retrain_on_all_data": "lightopt.retrain",
}

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

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
