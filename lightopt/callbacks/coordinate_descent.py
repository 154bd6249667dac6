"""Block coordinate descent, §8.7.2: train one block of parameters at a time, cycling through them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightopt._validation import check_bool, check_choice, check_int

__all__ = ["CoordinateDescent", "active_block"]

_UNASSIGNED = ("error", "train", "freeze")


def active_block(step: int, num_blocks: int, steps_per_block: int) -> int:
    """The block trained at optimizer step ``step`` (0-based): k steps of block 0, k of block 1, ...

    >>> [active_block(s, num_blocks=3, steps_per_block=2) for s in range(8)]
    [0, 0, 1, 1, 2, 2, 0, 0]
    """
    return (step // steps_per_block) % num_blocks


class CoordinateDescent(Callback):
    r"""Block coordinate descent, §8.7.2: minimize over one block of parameters at a time, in a cycle.

    .. math::
        \begin{aligned}
        &\textbf{require: } \text{blocks } \theta = (\theta_{B_0}, \dots, \theta_{B_{n-1}}),
            \ k \text{ steps per block} \\
        &\textbf{for } t = 0, 1, \dots \\
        &\quad b \leftarrow \lfloor t / k \rfloor \bmod n \\
        &\quad \text{one optimizer step on } J \text{ with respect to } \theta_{B_b} \text{ only}
        \end{aligned}

    ============  ======================  ==============================================
    book          argument                meaning
    ============  ======================  ==============================================
    block         ``blocks[i]``           a module name, or a list of parameter names
    (exact min.)  ``steps_per_block``     k optimizer steps per block before moving on
    ============  ======================  ==============================================

    The book minimizes *exactly* over each block ("minimize f(x) with respect to a single
    variable x_i, then with respect to another", "guaranteed to arrive at a (local) minimum").
    This callback takes k steps of the module's own optimizer on the active block: with large k
    (or a learning rate that solves the block's subproblem, as in the quadratic example below)
    that is the book's exact minimization; with k = 1 it is alternating gradient descent. The
    book's warning applies: coordinate descent is slow when blocks are strongly coupled, e.g.
    f(x) = (x₁ − x₂)² + α(x₁² + x₂²) with small α, where each sweep shrinks x₂ only by (1 + α)⁻².

    **How blocks are frozen.** In ``on_before_optimizer_step`` the gradients of every parameter
    outside the active block are set to ``None``. ``torch.optim`` optimizers and lightopt's
    first-order optimizers skip a parameter whose ``.grad`` is ``None``, so an inactive block is
    truly frozen for that step: momentum, weight decay and Adam's moments do not move it. Its
    optimizer state is paused, not decayed: a block resumes with the velocity it had when it was
    last active. (Toggling ``requires_grad`` alone would not freeze it: an optimizer whose
    ``zero_grad(set_to_none=False)`` leaves zero gradients, or momentum from earlier steps,
    still moves a parameter that has a gradient tensor.) Optimizers that re-evaluate the loss
    through the closure (L-BFGS, lightopt's line-search methods) recompute all gradients inside
    ``step``: use ``toggle_requires_grad=True`` with them.

    **Cost.** By default backward still computes every gradient, so a step costs as much as a
    full step. ``toggle_requires_grad=True`` also sets ``requires_grad=False`` on the inactive
    blocks before each training batch, so autograd skips their gradients (and anything only
    they need); the gradients are still set to ``None`` before the step, so the freezing is the
    same. The flags are restored when fitting ends. Under DDP, toggling needs
    ``find_unused_parameters=True``.

    **Parameters outside every block.** Every parameter with ``requires_grad=True`` at the start
    of fitting must be in exactly one block (``unassigned="error"``, the default), or is trained
    at every step (``"train"``) or never (``"freeze"``). Blocks must not overlap.

    **The clock.** The cycle counts training batches on which the optimizer stepped (one per
    optimizer step under gradient accumulation), so a closure that runs several times per step
    advances it once. The count is saved in checkpoints under :attr:`state_key`, and a resumed
    run continues the cycle where it stopped. ``coordinate_descent/block`` (the active block's
    index) is logged every step when ``log=True``.

    Args:
        blocks: a non-empty list; each entry is a module name (``pl_module.get_submodule``, e.g.
            ``"encoder"`` or ``"net.0"``) or a list of parameter names or prefixes (``"net.0"``
            matches ``"net.0.weight"`` and ``"net.0.bias"``).
        steps_per_block: k >= 1.
        unassigned: ``"error"``, ``"train"`` or ``"freeze"``: what to do with trainable parameters
            in no block.
        toggle_requires_grad: also skip the inactive blocks' gradients in backward (saves compute).
        log: log the active block's index.

    Example:
        >>> import lightning as L, torch
        >>> from lightopt.callbacks.coordinate_descent import CoordinateDescent
        >>> class Coupled(L.LightningModule):  # f(x) = (x1 - x2)² + α(x1² + x2²), α = 0.01
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.x1 = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        ...         self.x2 = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        ...     def training_step(self, batch, batch_idx):
        ...         return (self.x1 - self.x2) ** 2 + 0.01 * (self.x1 ** 2 + self.x2 ** 2)
        ...     def configure_optimizers(self):  # lr = 1/(2(1 + α)) minimizes each block exactly
        ...         return torch.optim.SGD(self.parameters(), lr=1 / 2.02)
        >>> model = Coupled()
        >>> trainer = L.Trainer(max_steps=20, callbacks=[CoordinateDescent([["x1"], ["x2"]])],
        ...     logger=False, enable_checkpointing=False, enable_progress_bar=False,
        ...     enable_model_summary=False)
        >>> trainer.fit(model, torch.utils.data.DataLoader(torch.zeros(20, 1)))
        >>> round(model.x2.item(), 7)  # 10 sweeps: (1 + α)^-20
        0.8195445
    """

    def __init__(
        self,
        blocks: Sequence[str | Sequence[str]],
        steps_per_block: int = 1,
        *,
        unassigned: str = "error",
        toggle_requires_grad: bool = False,
        log: bool = True,
    ) -> None:
        self.blocks = _check_blocks(blocks)
        self.steps_per_block = check_int("steps_per_block", steps_per_block, 1)
        self.unassigned = check_choice("unassigned", unassigned, _UNASSIGNED)
        self.toggle_requires_grad = check_bool("toggle_requires_grad", toggle_requires_grad)
        self.log = check_bool("log", log)
        self.step = 0  # optimizer steps taken under this callback: the position in the cycle
        self.block_params: list[list[torch.nn.Parameter]] = []
        self.block_names: list[list[str]] = []
        self._always: list[torch.nn.Parameter] = []
        self._never: list[torch.nn.Parameter] = []
        self._stepped = False
        self._saved_flags: list[tuple[torch.nn.Parameter, bool]] = []

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(blocks=self.blocks, steps_per_block=self.steps_per_block)

    @property
    def active(self) -> int:
        """The index of the block the next optimizer step trains."""
        return active_block(self.step, len(self.blocks), self.steps_per_block)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._resolve(pl_module)
        if self.toggle_requires_grad:
            everything = [p for block in self.block_params for p in block] + self._always + self._never
            self._saved_flags = [(p, p.requires_grad) for p in everything]
            for p in self._never:
                p.requires_grad_(False)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._stepped = False
        if self.toggle_requires_grad:
            for index, params in enumerate(self.block_params):
                for p in params:
                    p.requires_grad_(index == self.active)

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        trained = {id(p) for p in self.block_params[self.active]} | {id(p) for p in self._always}
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in trained:
                    p.grad = None
        if self.log and not self._stepped:
            pl_module.log("coordinate_descent/block", float(self.active), on_step=True, on_epoch=False)
        self._stepped = True

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._stepped:
            self.step += 1
            self._stepped = False

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for p, flag in self._saved_flags:
            p.requires_grad_(flag)
        self._saved_flags = []

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "active": self.active}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.step = state_dict.get("step", 0)

    def _resolve(self, pl_module: pl.LightningModule) -> None:
        named = dict(pl_module.named_parameters())
        owner: dict[str, int] = {}
        self.block_names = []
        for index, block in enumerate(self.blocks):
            if isinstance(block, str):
                names = _module_parameters(pl_module, block)
            else:
                names = _matching_parameters(named, block)
            names = [n for n in names if named[n].requires_grad]
            if not names:
                raise ValueError(
                    f"Block {index} ({block!r}) has no trainable parameters: every parameter in it has "
                    "requires_grad=False. Remove the block or unfreeze its parameters."
                )
            for name in names:
                if name in owner:
                    raise ValueError(
                        f"Parameter `{name}` is in block {owner[name]} and in block {index}; blocks must not "
                        "overlap. Name smaller modules or list parameters explicitly."
                    )
                owner[name] = index
            self.block_names.append(names)
        self.block_params = [[named[n] for n in names] for names in self.block_names]
        rest = [n for n, p in named.items() if p.requires_grad and n not in owner]
        if rest and self.unassigned == "error":
            raise ValueError(
                f"The trainable parameters {', '.join(f'`{n}`' for n in rest)} are in no block. Add them to a "
                "block, or pass unassigned='train' (train them at every step) or unassigned='freeze'."
            )
        self._always = [named[n] for n in rest] if self.unassigned == "train" else []
        self._never = [named[n] for n in rest] if self.unassigned == "freeze" else []


def _check_blocks(blocks: Any) -> list[str | list[str]]:
    if isinstance(blocks, str) or not isinstance(blocks, Sequence):
        raise TypeError(
            f"`blocks` must be a list of module names or of lists of parameter names, but got blocks={blocks!r}."
        )
    if len(blocks) == 0:
        raise ValueError("`blocks` must name at least one block, but got blocks=[].")
    checked: list[str | list[str]] = []
    for block in blocks:
        if isinstance(block, str):
            checked.append(block)
            continue
        if not isinstance(block, Sequence) or not all(isinstance(name, str) for name in block):
            raise TypeError(
                f"Each entry of `blocks` must be a module name or a list of parameter names, but got {block!r}."
            )
        if len(block) == 0:
            raise ValueError("Each list in `blocks` must name at least one parameter, but got an empty list.")
        checked.append(list(block))
    return checked


def _module_parameters(pl_module: torch.nn.Module, name: str) -> list[str]:
    try:
        module = pl_module.get_submodule(name)
    except AttributeError:
        valid = [n for n, m in pl_module.named_modules() if n and any(True for _ in m.parameters())]
        raise ValueError(
            f"`blocks` names the module {name!r}, which {type(pl_module).__name__} does not have. Use any of "
            f"the following: {', '.join(repr(n) for n in valid)}."
        ) from None
    prefix = f"{name}." if name else ""
    return [prefix + n for n, _ in module.named_parameters()]


def _matching_parameters(named: dict[str, torch.nn.Parameter], patterns: list[str]) -> list[str]:
    found: list[str] = []
    for pattern in patterns:
        hits = [n for n in named if n == pattern or n.startswith(pattern + ".")]
        if not hits:
            raise ValueError(
                f"`blocks` names the parameter or prefix {pattern!r}, which matches no parameter. Use any of the "
                f"following: {', '.join(repr(n) for n in named)}."
            )
        found.extend(n for n in hits if n not in found)
    return found
