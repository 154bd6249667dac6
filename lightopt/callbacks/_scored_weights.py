"""Which weights a validation run scored, when a weight-averaging callback swapped its average in.

Lightning's ``WeightAveraging`` (and so ``EMAWeightAveraging`` and lightopt's
:class:`~lightopt.callbacks.PolyakAveraging`) swaps the averaged weights into the module at
``on_validation_epoch_start`` and swaps them back at ``on_validation_epoch_end``, so a metric
logged by validation scores the average, while the module holds the raw iterate again by the time
any ``on_validation_end`` or ``on_train_epoch_end`` hook reads the metric. The averaged module
still holds the weights that were scored at that point. Lightning's ``StochasticWeightAveraging``
validates the raw weights and writes its average into the module at ``on_train_end`` only.
"""

from __future__ import annotations

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import StochasticWeightAveraging, WeightAveraging
from torch import nn

from lightopt import _compat
from lightopt.callbacks.polyak_averaging import PolyakAveraging

__all__ = ["validated_module", "writes_weights_at_train_end"]


def validated_module(trainer: Trainer) -> nn.Module | None:
    """The module whose weights the latest validation run used in place of the model's own, or ``None``.

    Only one weight-averaging callback per Trainer is meaningful (each swaps weights for validation);
    with several, the last one listed is taken.
    """
    for callback in reversed(trainer.callbacks):
        if isinstance(callback, PolyakAveraging):
            module = callback.averaged_module
        elif isinstance(callback, WeightAveraging):
            module = _compat.weight_average_module(callback)
        else:
            continue
        if module is not None:
            return module
    return None


def writes_weights_at_train_end(callback: Callback) -> bool:
    """Whether ``callback`` may overwrite the module's weights in its ``on_train_end`` hook."""
    return isinstance(callback, (WeightAveraging, StochasticWeightAveraging))
