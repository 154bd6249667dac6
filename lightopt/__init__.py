"""lightopt: chapter 8 of Goodfellow, Bengio & Courville's *Deep Learning* for PyTorch Lightning."""

import signal
import sys

_COMMAND = sys.argv[0].endswith("lightopt") or sys.orig_argv[1:3] == ["-m", "lightopt"]
if _COMMAND and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # SIGTERM while torch imports: one line too

    def _terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, _terminated)

try:
    from lightopt import callbacks, init, optim, schedules
    from lightopt.mixin import ConfigureOptimizersMixin
    from lightopt.pretraining import greedy_layerwise_pretraining
    from lightopt.retrain import continue_on_all_data, retrain_on_all_data
except KeyboardInterrupt as interrupt:  # Ctrl-C while the `lightopt` command imports torch: one line, as later
    if _COMMAND:
        print(f"interrupted: {interrupt}" if str(interrupt) else "interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise

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
