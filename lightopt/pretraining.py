r"""Greedy supervised layer-wise pretraining, §8.7.4 (Bengio et al. 2007, Figure 8.7).

Train a shallow network, keep its hidden layer and discard its output layer; put a new hidden
layer and a new output layer on top and train them on the same objective; repeat; optionally
fine-tune all layers jointly at the end. :func:`greedy_layerwise_pretraining` runs one
``Trainer.fit`` per stage, and one more for the fine-tuning.

=====================  ============================================================
book (Fig. 8.7)        here
=====================  ============================================================
h^(k) (hidden layer)   ``blocks[k]``, any ``nn.Module``
output layer of the    ``head_factory(k)``, a fresh module trained with stage k and
shallow MLP k          then discarded (the last one is kept as the output layer)
"same objective"       ``wrap(network)``, a LightningModule that trains ``network``
fine-tuning            ``finetune_epochs`` > 0
=====================  ============================================================
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer, seed_everything
from typing_extensions import override

from lightopt import _validation

__all__ = ["greedy_layerwise_pretraining", "PretrainingResult", "StageResult"]


@dataclass
class StageResult:
    """One stage of greedy pretraining.

    Attributes:
        stage: k, 0-based.
        network: ``nn.Sequential(blocks[0], ..., blocks[k], head)``, the stage-k network. It shares
            the blocks with the final network, so fine-tuning changes it too.
        head: the stage's output layer (discarded for the next stage, except the last one's).
        val_metrics: ``trainer.validate`` at the end of the stage (empty without validation data).
    """

    stage: int
    network: torch.nn.Sequential
    head: torch.nn.Module
    val_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class PretrainingResult:
    """What :func:`greedy_layerwise_pretraining` returns.

    Attributes:
        network: the stacked network ``nn.Sequential(blocks[0], ..., blocks[-1], last head)``,
            fine-tuned when ``finetune_epochs > 0``, with every parameter's ``requires_grad``
            as it was before pretraining.
        module: the LightningModule that trained it last (``wrap(network)``).
        stages: one :class:`StageResult` per block.
        finetune_metrics: validation metrics after fine-tuning (``None`` without fine-tuning).
    """

    network: torch.nn.Sequential
    module: LightningModule
    stages: list[StageResult]
    finetune_metrics: dict[str, float] | None = None


def greedy_layerwise_pretraining(
    blocks: Sequence[torch.nn.Module],
    head_factory: Callable[[int], torch.nn.Module],
    wrap: Callable[[torch.nn.Module], LightningModule],
    datamodule: Any,
    *,
    epochs_per_stage: int,
    finetune_epochs: int = 0,
    freeze: bool = True,
    trainer_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> PretrainingResult:
    r"""Greedy supervised layer-wise pretraining, §8.7.4 (Figure 8.7).

    .. math::
        \begin{aligned}
        &\textbf{for } k = 0, \dots, L - 1 \\
        &\quad \text{freeze } h^{(0)}, \dots, h^{(k-1)}
            \quad (\text{unless } \texttt{freeze=False}) \\
        &\quad \text{train } \mathrm{head}_k \circ h^{(k)} \circ h^{(k-1)} \circ \dots \circ h^{(0)}
            \text{ on } J \text{ for } \texttt{epochs\_per\_stage} \text{ epochs} \\
        &\quad \text{discard } \mathrm{head}_k \ (k < L - 1) \\
        &\text{optionally train } \mathrm{head}_{L-1} \circ h^{(L-1)} \circ \dots \circ h^{(0)}
            \text{ jointly (fine-tuning)}
        \end{aligned}

    Stage k fits ``wrap(nn.Sequential(blocks[0], ..., blocks[k], head_factory(k)))`` for
    ``epochs_per_stage`` epochs with a fresh ``Trainer(max_epochs=..., **trainer_kwargs)`` (and
    so a fresh optimizer from ``configure_optimizers``), then runs ``trainer.validate`` when the
    datamodule has a ``val_dataloader`` and the module a ``validation_step``. With
    ``freeze=True`` (the book's greedy scheme) the earlier blocks have ``requires_grad=False``
    and are kept in eval mode during the stage (dropout off, batch-norm statistics fixed), so
    their parameters and buffers stay bit-identical; ``freeze=False`` trains all blocks at every
    stage (the book's "fine-tune at each stage" variant). The last stage's head is kept as the output layer. With
    ``finetune_epochs > 0`` everything is unfrozen and trained jointly once more.

    Differences from the book: a "block" may be any module (a convolution and its
    normalization, a residual block), not only one hidden layer; the objective is whatever
    ``wrap``'s module optimizes.

    Args:
        blocks: the hidden blocks h^(0), ..., h^(L-1), input side first (a list,
            ``nn.ModuleList`` or ``nn.Sequential``); block k's output feeds block k + 1.
        head_factory: ``k -> nn.Module``, a fresh output layer on block k's output.
        wrap: ``network -> LightningModule`` whose ``training_step`` trains ``network`` on the
            objective (its ``forward`` calls ``network``); called once per stage.
        datamodule: a ``LightningDataModule`` passed to every ``fit`` and ``validate``.
        epochs_per_stage: epochs per greedy stage (>= 1).
        finetune_epochs: epochs of joint fine-tuning at the end (>= 0; 0 skips it).
        freeze: freeze the earlier blocks at each stage.
        trainer_kwargs: further ``Trainer`` arguments, except ``max_epochs`` and ``max_steps``.
        seed: passed to ``seed_everything`` once before the first stage; ``None`` leaves the
            random state alone.

    Returns:
        A :class:`PretrainingResult`: the stacked network, the last module, per-stage results.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from lightning.pytorch import LightningDataModule, LightningModule
        >>> from lightopt.pretraining import greedy_layerwise_pretraining
        >>> class Data(LightningDataModule):
        ...     def train_dataloader(self):
        ...         x = torch.randn(32, 4)
        ...         return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
        >>> class Regression(LightningModule):
        ...     def __init__(self, net):
        ...         super().__init__()
        ...         self.net = net
        ...     def training_step(self, batch, batch_idx):
        ...         x, y = batch
        ...         return torch.nn.functional.mse_loss(self.net(x), y)
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.05)
        >>> blocks = [torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh()),
        ...           torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh())]
        >>> quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...              enable_model_summary=False)
        >>> result = greedy_layerwise_pretraining(
        ...     blocks, lambda k: torch.nn.Linear(8, 1), Regression, Data(),
        ...     epochs_per_stage=2, finetune_epochs=1, trainer_kwargs=quiet, seed=0)
        >>> [len(stage.network) for stage in result.stages], len(result.network)
        ([2, 3], 3)
        >>> result.network[0] is blocks[0] and result.network[-1] is result.stages[-1].head
        True
    """
    blocks = _check_blocks(blocks)
    for name, value in (("head_factory", head_factory), ("wrap", wrap)):
        if not callable(value):
            raise TypeError(f"`{name}` must be callable, but got {name}={value!r} ({type(value).__name__}).")
    epochs_per_stage = _validation.check_int("epochs_per_stage", epochs_per_stage, 1)
    finetune_epochs = _validation.check_int("finetune_epochs", finetune_epochs, 0)
    freeze = _validation.check_bool("freeze", freeze)
    kwargs = _check_trainer_kwargs(trainer_kwargs)
    if seed is not None:
        seed = _validation.check_int("seed", seed, 0)
        seed_everything(seed, workers=True)

    flags = [(p, p.requires_grad) for block in blocks for p in block.parameters()]
    modes = [(m, m.training) for block in blocks for m in block.modules()]
    has_val = _overrides(datamodule, LightningDataModule, "val_dataloader")
    stages: list[StageResult] = []
    module: LightningModule | None = None
    try:
        for k in range(len(blocks)):
            head = head_factory(k)
            if not isinstance(head, torch.nn.Module):
                raise TypeError(f"`head_factory({k})` must return an nn.Module, but it returned {type(head).__name__}.")
            frozen = blocks[:k] if freeze else []
            for block in frozen:
                block.requires_grad_(False)
            network = torch.nn.Sequential(*blocks[: k + 1], head)
            module = _wrap(wrap, network)
            metrics = _fit(module, datamodule, epochs_per_stage, kwargs, frozen, has_val)
            stages.append(StageResult(stage=k, network=network, head=head, val_metrics=metrics))
        finetune_metrics = None
        if finetune_epochs:
            for p, flag in flags:
                p.requires_grad_(flag)
            module = _wrap(wrap, stages[-1].network)
            finetune_metrics = _fit(module, datamodule, finetune_epochs, kwargs, [], has_val)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.train(mode)
    assert module is not None  # at least one block
    return PretrainingResult(stages[-1].network, module, stages, finetune_metrics)


class _KeepFrozenInEval(Callback):
    """Puts the frozen blocks in eval mode before each training epoch (dropout off, BN statistics fixed)."""

    def __init__(self, frozen: Sequence[torch.nn.Module]) -> None:
        self.frozen = list(frozen)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for block in self.frozen:
            block.eval()


def _fit(
    module: LightningModule,
    datamodule: Any,
    epochs: int,
    kwargs: dict[str, Any],
    frozen: Sequence[torch.nn.Module],
    has_val: bool,
) -> dict[str, float]:
    callbacks = [*(kwargs.get("callbacks") or []), _KeepFrozenInEval(frozen)]
    trainer = Trainer(max_epochs=epochs, **{**kwargs, "callbacks": callbacks})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        for block in frozen:
            block.eval()
        trainer.fit(module, datamodule=datamodule)
        if not (has_val and _overrides(module, LightningModule, "validation_step")):
            return {}
        results = trainer.validate(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def _overrides(obj: Any, base: type, name: str) -> bool:
    """Whether ``obj`` has a method ``name`` of its own (not the do-nothing one of ``base``)."""
    method = getattr(type(obj), name, None)
    return callable(method) and method is not getattr(base, name, None)


def _wrap(wrap: Callable[[torch.nn.Module], LightningModule], network: torch.nn.Sequential) -> LightningModule:
    module = wrap(network)
    if not isinstance(module, LightningModule):
        raise TypeError(f"`wrap` must return a LightningModule, but it returned {type(module).__name__}.")
    if not any(m is network for m in module.modules()):
        raise ValueError(
            "`wrap(network)` must return a LightningModule that contains `network` (e.g. as `self.net`), "
            "so that fitting it trains the network."
        )
    return module


def _check_blocks(blocks: Any) -> list[torch.nn.Module]:
    if isinstance(blocks, torch.nn.Module) and not isinstance(blocks, (torch.nn.Sequential, torch.nn.ModuleList)):
        raise TypeError(
            f"`blocks` must be a list of modules, an nn.ModuleList or an nn.Sequential, but got "
            f"{type(blocks).__name__}."
        )
    if not isinstance(blocks, (Sequence, torch.nn.Sequential, torch.nn.ModuleList)):
        raise TypeError(f"`blocks` must be a list of modules, but got blocks={blocks!r} ({type(blocks).__name__}).")
    blocks = list(blocks)
    if not blocks:
        raise ValueError("`blocks` must hold at least one module, but got an empty list.")
    for i, block in enumerate(blocks):
        if not isinstance(block, torch.nn.Module):
            raise TypeError(f"`blocks[{i}]` must be an nn.Module, but got {type(block).__name__}.")
    return blocks


def _check_trainer_kwargs(trainer_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    if trainer_kwargs is None:
        return {}
    if not isinstance(trainer_kwargs, Mapping):
        raise TypeError(
            f"`trainer_kwargs` must be a mapping of Trainer arguments or None, but got "
            f"trainer_kwargs={trainer_kwargs!r} ({type(trainer_kwargs).__name__})."
        )
    clashes = [key for key in ("max_epochs", "max_steps") if key in trainer_kwargs]
    if clashes:
        raise ValueError(
            f"`trainer_kwargs` must not set {', '.join(f'`{k}`' for k in clashes)}: the number of epochs is "
            "`epochs_per_stage` (and `finetune_epochs`). Remove it."
        )
    return dict(trainer_kwargs)
