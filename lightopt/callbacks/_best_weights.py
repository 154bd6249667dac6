"""θ* for :class:`~lightopt.callbacks.EarlyStopping`: which weights a validation round scored, copies, layout checks.

Lightning's ``WeightAveraging`` (and so ``EMAWeightAveraging`` and lightopt's
:class:`~lightopt.callbacks.PolyakAveraging`) swaps the averaged weights into the module at
``on_validation_epoch_start`` and swaps them back at ``on_validation_epoch_end``, so a metric
logged by validation scores the average, while the module holds the raw iterate again by the time
any ``on_validation_end`` or ``on_train_epoch_end`` hook reads the metric. The averaged module
still holds the weights that were scored at that point. Lightning's ``StochasticWeightAveraging``
validates the raw weights and writes its average into the module at ``on_train_end`` only.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import StochasticWeightAveraging, WeightAveraging
from torch import nn

from lightopt import _compat
from lightopt.callbacks.polyak_averaging import PolyakAveraging

__all__ = ["check_same_layout", "copy_to", "validated_module", "writes_weights_at_train_end"]


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


def copy_to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device, copy=True)
    return copy.deepcopy(value)  # extra state from `get_extra_state`


def check_same_layout(best: dict[str, Any], current: dict[str, Any], monitor: str) -> None:
    missing = sorted(current.keys() - best.keys())
    unexpected = sorted(best.keys() - current.keys())
    reshaped = [
        f"{k} (saved {tuple(best[k].shape)}, now {tuple(current[k].shape)})"
        for k in sorted(best.keys() & current.keys())
        if isinstance(best[k], torch.Tensor)
        and isinstance(current[k], torch.Tensor)
        and best[k].shape != current[k].shape
    ]
    if not (missing or unexpected or reshaped):
        return
    problems = []
    if missing:
        problems.append(f"missing from the saved weights: {', '.join(missing)}")
    if unexpected:
        problems.append(f"no longer in the module: {', '.join(unexpected)}")
    if reshaped:
        problems.append(f"shape changed: {', '.join(reshaped)}")
    raise ValueError(
        f"EarlyStopping(monitor={monitor!r}) cannot restore the best weights because the module's "
        f"state_dict changed since they were saved; {'; '.join(problems)}. Keep the module's "
        "parameters fixed during fitting, or pass restore_best_weights=False."
    )
