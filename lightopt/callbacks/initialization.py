"""The ``Initialization`` callback: the parameter-initialization heuristics of §8.4 at the start of a fit."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from typing_extensions import override

from lightopt import init
from lightopt._validation import check_bool, check_int, check_number, check_range

__all__ = ["Initialization"]

_Fill = Callable[[torch.Tensor, "torch.Generator | None", "Initialization"], Any]

#: Weight schemes by name; ``"keep"`` leaves the weights as the layer built them.
_WEIGHT_SCHEMES: Mapping[str, _Fill | None] = {
    "heuristic_uniform": lambda t, g, cb: init.heuristic_uniform_(t, generator=g),
    "normalized_uniform": lambda t, g, cb: init.normalized_uniform_(t, gain=cb.gain, generator=g),
    "normalized_normal": lambda t, g, cb: init.normalized_normal_(t, gain=cb.gain, generator=g),
    "he_uniform": lambda t, g, cb: init.he_uniform_(t, generator=g),
    "he_normal": lambda t, g, cb: init.he_normal_(t, generator=g),
    "orthogonal": lambda t, g, cb: init.orthogonal_(t, gain=cb.gain, generator=g),
    "sparse": lambda t, g, cb: init.sparse_(t, k=cb.k, std=cb.std, generator=g),
    "keep": None,
}
#: Bias schemes by name, for ``nn.Linear`` and ``nn.Conv*d`` biases.
_BIAS_SCHEMES = ("zeros", "relu", "keep")

_DENSE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_RECURRENT = (nn.RNN, nn.LSTM, nn.GRU)
_GATES = {nn.RNN: 1, nn.LSTM: 4, nn.GRU: 3}


class Initialization(Callback):
    r"""Parameter initialization, §8.4, applied when a fit starts from scratch.

    Initializes every ``nn.Linear``, ``nn.Conv1d/2d/3d`` and ``nn.RNN/LSTM/GRU`` layer of the
    LightningModule with the functions of :mod:`lightopt.init`, chosen by name per layer type:

    ======================  ==========================================================
    argument                layers and effect
    ======================  ==========================================================
    ``weight``              ``nn.Linear`` weights; default for the two below
    ``conv_weight``         ``nn.Conv*d`` weights (fan-in C_in·k_h·k_w)
    ``recurrent_weight``    RNN/LSTM/GRU ``weight_ih``/``weight_hh``, one gate block at a
                            time (an LSTM's (4H, ·) weight is four (H, ·) matrices)
    ``bias``                ``"zeros"``, ``"relu"`` (``relu_bias``, 0.1 in the book) or
                            ``"keep"``, for Linear/Conv biases; recurrent biases are
                            zeroed unless ``"keep"``
    ``lstm_forget_bias``    b_if + b_hf of every LSTM (1 in the book; None to skip)
    ``output_layer``        name (as in ``named_modules()``) of the output layer: its bias
                            is set from ``output_marginals`` (softmax(b) = c) or zeroed,
                            never the ReLU constant
    ======================  ==========================================================

    Weight schemes: ``"heuristic_uniform"``, ``"normalized_uniform"`` (eq. 8.23),
    ``"normalized_normal"``, ``"he_uniform"``, ``"he_normal"``, ``"orthogonal"`` (these three use
    ``gain``), ``"sparse"`` (uses ``k`` and ``std``) and ``"keep"``.

    **When.** In ``on_fit_start``: after the LightningModule's ``setup`` and ``configure_model``
    (so layers built there are included) and, for the usual strategies, after Lightning has loaded
    ``fit(ckpt_path=...)``. A fit that resumes from a checkpoint (``trainer.ckpt_path`` set) keeps
    the checkpoint's weights and is never re-initialized; so is a second ``fit`` with the same
    callback instance, which continues from the current weights. ``state_dict`` records that the
    initialization happened. Under multi-process strategies rank 0's weights are broadcast. Sharded
    strategies (FSDP, DeepSpeed) should call :mod:`lightopt.init` in ``configure_model`` instead.

    **Reproducibility.** With ``seed``, the weights are drawn on the CPU from a generator seeded
    once per fit, so the same seed gives the same weights on any device; without it they come from
    torch's global generator (``lightning.seed_everything`` makes them reproducible).

    **Checking the scale** (§8.4's data-driven rule: look at the standard deviation of activations
    and gradients on one minibatch; Mishkin & Matas' LSUV). With ``check_scale=True`` the first
    training batch is run forward (under ``torch.no_grad``, model buffers restored afterwards)
    before the first step, and every layer's output std is logged as ``init/act_std/<layer>``; the
    first backward pass's weight gradient std is logged as ``init/grad_std/<layer>``. With
    ``target_std`` as well, each Linear/Conv layer except ``output_layer``, in forward order, has
    its weight multiplied by ``target_std / std`` until its output std is within ``scale_tol``
    (relative) of the target, at most ``max_scale_iters`` forward passes per layer; the total
    factor is logged as ``init/scale/<layer>``. Recurrent layers are measured, not rescaled.
    ``pl_module(input_fn(batch))`` runs the forward; the default ``input_fn`` takes ``batch[0]``
    of a tuple or list batch and the batch itself otherwise.

    Args:
        weight, conv_weight, recurrent_weight, bias: scheme names, as above; ``None`` for
            ``conv_weight`` or ``recurrent_weight`` means the same as ``weight``.
        gain: g > 0 of the normalized and orthogonal schemes.
        k, std: non-zero incoming weights per unit and their σ, for ``"sparse"`` (Martens: 15, 1).
        relu_bias, lstm_forget_bias: the bias constants (book: 0.1 and 1).
        output_layer, output_marginals: the output layer's name and its class counts or
            frequencies c (all > 0).
        seed: seed of the CPU generator that draws the weights; None uses torch's global one.
        check_scale, target_std, max_scale_iters, scale_tol, input_fn: the scale check, above.

    Differences from the book: He initialization is not in the book's text. ``"keep"`` leaves
    PyTorch's defaults (``nn.Linear``'s weight default is the heuristic; its bias default is
    U(±1/√m), not a constant).

    Example:
        >>> import lightning as L, torch
        >>> from lightopt.callbacks import Initialization
        >>> class Net(L.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.hidden, self.head = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)
        ...     def training_step(self, batch, batch_idx):
        ...         x, y = batch
        ...         return torch.nn.functional.cross_entropy(self.head(self.hidden(x).relu()), y)
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        >>> data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.tensor([0, 0, 0, 0, 1, 1, 2, 2]))
        >>> callback = Initialization(bias="relu", output_layer="head", output_marginals=[4, 2, 2], seed=0)
        >>> trainer = L.Trainer(max_steps=0, callbacks=[callback], logger=False, enable_checkpointing=False,
        ...                     enable_progress_bar=False, enable_model_summary=False)
        >>> net = Net()
        >>> trainer.fit(net, torch.utils.data.DataLoader(data, batch_size=8))
        >>> net.hidden.bias.detach()[:3], torch.softmax(net.head.bias.detach(), 0)
        (tensor([0.1000, 0.1000, 0.1000]), tensor([0.5000, 0.2500, 0.2500]))
    """

    def __init__(
        self,
        weight: str = "normalized_uniform",
        *,
        conv_weight: str | None = None,
        recurrent_weight: str | None = None,
        bias: str = "zeros",
        gain: float = 1.0,
        k: int = 15,
        std: float = 1.0,
        relu_bias: float = 0.1,
        lstm_forget_bias: float | None = 1.0,
        output_layer: str | None = None,
        output_marginals: Any = None,
        seed: int | None = None,
        check_scale: bool = False,
        target_std: float | None = None,
        max_scale_iters: int = 10,
        scale_tol: float = 0.02,
        input_fn: Callable[[Any], Any] | None = None,
    ) -> None:
        self.weight = _check_scheme("weight", weight, _WEIGHT_SCHEMES)
        self.conv_weight = weight if conv_weight is None else _check_scheme("conv_weight", conv_weight, _WEIGHT_SCHEMES)
        self.recurrent_weight = (
            weight if recurrent_weight is None else _check_scheme("recurrent_weight", recurrent_weight, _WEIGHT_SCHEMES)
        )
        self.bias = _check_scheme("bias", bias, _BIAS_SCHEMES)
        self.gain = check_range("gain", gain, 0.0, low_inclusive=False)
        self.k = check_int("k", k, low=1)
        self.std = check_range("std", std, 0.0, low_inclusive=False)
        self.relu_bias = check_number("relu_bias", relu_bias)
        self.lstm_forget_bias = None if lstm_forget_bias is None else check_number("lstm_forget_bias", lstm_forget_bias)
        if output_layer is not None and not isinstance(output_layer, str):
            raise TypeError(
                f"`output_layer` must be a module name (str) or None, but got output_layer={output_layer!r}."
            )
        self.output_layer = output_layer
        if output_marginals is not None and output_layer is None:
            raise ValueError("`output_marginals` sets the bias of the output layer; name it with `output_layer=...`.")
        self.output_marginals = None if output_marginals is None else init.check_class_frequencies(output_marginals)
        self.seed = None if seed is None else check_int("seed", seed, low=0)
        self.check_scale = check_bool("check_scale", check_scale)
        if target_std is not None and not check_scale:
            raise ValueError("`target_std` rescales layers during the scale check; pass check_scale=True as well.")
        self.target_std = (
            None if target_std is None else check_range("target_std", target_std, 0.0, low_inclusive=False)
        )
        self.max_scale_iters = check_int("max_scale_iters", max_scale_iters, low=1)
        self.scale_tol = check_range("scale_tol", scale_tol, 0.0, low_inclusive=False)
        if input_fn is not None and not callable(input_fn):
            raise TypeError(f"`input_fn` must be callable or None, but got input_fn={input_fn!r}.")
        self.input_fn = input_fn
        self._initialized = False
        self._scale_pending = False
        self._grad_pending = False

    @property
    @override
    def state_key(self) -> str:
        schemes = dict(
            weight=self.weight,
            conv_weight=self.conv_weight,
            recurrent_weight=self.recurrent_weight,
            bias=self.bias,
            output_layer=self.output_layer,
        )
        return f"{type(self).__qualname__}{schemes!r}"

    @property
    def initialized(self) -> bool:
        """Whether this callback initialized the model, or found it resumed from a checkpoint."""
        return self._initialized

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"initialized": self._initialized, "seed": self.seed}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._initialized = bool(state_dict.get("initialized", True))

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._initialized or trainer.ckpt_path is not None:
            # Resumed (the checkpoint's weights are already loaded, or will be by strategies that
            # restore after setup), or continuing an earlier fit: keep the weights.
            self._initialized = True
            return
        layers = self._find_layers(pl_module)
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        for name, module in layers:
            try:
                self._initialize_layer(module, generator, is_output=name == self.output_layer)
            except ValueError as err:
                raise ValueError(f"Initialization of layer {name!r} ({type(module).__name__}) failed: {err}") from err
        if trainer.world_size > 1:
            _broadcast_from_rank_zero(trainer, [m for _, m in layers])
        self._initialized = True
        self._scale_pending = self.check_scale

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._scale_pending:
            return
        self._scale_pending = False
        self._grad_pending = True
        stds, scales = self._check_scale(trainer, pl_module, self._input(batch))
        for name, value in stds.items():
            pl_module.log(f"init/act_std/{name}", value, on_step=True, on_epoch=False)
        for name, value in scales.items():
            pl_module.log(f"init/scale/{name}", value, on_step=True, on_epoch=False)

    @override
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._grad_pending:
            return
        self._grad_pending = False
        for name, module in _named_layers(pl_module):
            grads = [
                p.grad.detach().flatten().float()
                for n, p in module.named_parameters(recurse=False)
                if n.startswith("weight") and p.grad is not None
            ]
            if grads:
                pl_module.log(f"init/grad_std/{name}", torch.cat(grads).std(), on_step=True, on_epoch=False)

    # -- initialization ---------------------------------------------------------------------------

    def _find_layers(self, pl_module: pl.LightningModule) -> list[tuple[str, nn.Module]]:
        layers = _named_layers(pl_module)
        if not layers:
            raise ValueError(
                f"Initialization found no nn.Linear, nn.Conv1d/2d/3d, nn.RNN/LSTM/GRU layer in "
                f"{type(pl_module).__name__}; initialize other parameters with lightopt.init in the module."
            )
        names = [name for name, _ in layers]
        if self.output_layer is not None and self.output_layer not in names:
            raise ValueError(
                f"`output_layer` must name a layer of the model, but got output_layer={self.output_layer!r}."
                f"{_closest(self.output_layer, names)} Layers found: {', '.join(names)}."
            )
        if self.output_marginals is not None and not isinstance(dict(layers)[self.output_layer], _DENSE):
            raise ValueError(
                f"`output_marginals` sets a Linear or Conv bias, but output layer {self.output_layer!r} is a "
                f"{type(dict(layers)[self.output_layer]).__name__}; name the layer that produces the logits."
            )
        for name, module in layers:
            if any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters(recurse=False)):
                raise ValueError(
                    f"Layer {name!r} is lazy and has no shape yet; materialize it (run a forward pass) in "
                    "`configure_model`, or build it with explicit sizes."
                )
        return layers

    def _initialize_layer(self, module: nn.Module, generator: torch.Generator | None, is_output: bool) -> None:
        if isinstance(module, _RECURRENT):
            scheme = _WEIGHT_SCHEMES[self.recurrent_weight]
            for name, param in module.named_parameters(recurse=False):
                if name.startswith("weight"):
                    gates = 1 if name.startswith("weight_hr") else _GATES[type(module)]
                    for block in param.chunk(gates, dim=0):  # one (H, ·) matrix per gate
                        self._fill(block, scheme, generator)
                elif self.bias != "keep":
                    init.zeros_(param)
            if isinstance(module, nn.LSTM) and module.bias and self.lstm_forget_bias is not None:
                init.lstm_forget_bias_(module, self.lstm_forget_bias)
            return
        self._fill(
            module.weight, _WEIGHT_SCHEMES[self.conv_weight if isinstance(module, _CONV) else self.weight], generator
        )
        if module.bias is None:
            if is_output and self.output_marginals is not None:
                raise ValueError("`output_marginals` needs a bias, but the output layer has bias=False.")
            return
        if is_output and self.output_marginals is not None:
            init.output_bias_from_marginals_(module.bias, self.output_marginals)
        elif self.bias == "relu" and not is_output:
            init.relu_bias_(module.bias, self.relu_bias)
        elif self.bias != "keep":
            init.zeros_(module.bias)

    def _fill(self, tensor: torch.Tensor, scheme: _Fill | None, generator: torch.Generator | None) -> None:
        if scheme is None:
            return
        if generator is None:
            scheme(tensor, None, self)
            return
        # Draw on the CPU so that a seed gives the same weights on every device.
        dtype = tensor.dtype if tensor.dtype in (torch.float32, torch.float64) else torch.float32
        values = torch.empty(tensor.shape, dtype=dtype)
        scheme(values, generator, self)
        with torch.no_grad():
            tensor.copy_(values)

    # -- scale check ------------------------------------------------------------------------------

    def _input(self, batch: Any) -> Any:
        if self.input_fn is not None:
            return self.input_fn(batch)
        if isinstance(batch, (tuple, list)):
            return batch[0]
        if isinstance(batch, Mapping):
            raise TypeError("The training batch is a mapping; pass `input_fn` to say which entry is the model input.")
        return batch

    def _check_scale(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, inputs: Any
    ) -> tuple[dict[str, float], dict[str, float]]:
        layers = dict(_named_layers(pl_module))
        outputs: dict[str, torch.Tensor] = {}

        def record(name: str) -> Callable[..., None]:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                outputs.setdefault(name, _first_tensor(output))  # a shared layer: its first call

            return hook

        def measure() -> dict[str, float]:
            outputs.clear()
            pl_module(inputs)
            names = list(outputs)  # forward order
            local = torch.stack([outputs[n].detach().float().std() for n in names])
            reduced = trainer.strategy.reduce(local, reduce_op="mean")
            return dict(zip(names, reduced.tolist()))

        handles = [module.register_forward_hook(record(name)) for name, module in layers.items()]
        buffers = {name: b.detach().clone() for name, b in pl_module.named_buffers()}
        scales: dict[str, float] = {}
        try:
            with torch.no_grad(), trainer.precision_plugin.train_step_context():
                stds = measure()
                to_rescale = list(stds) if self.target_std is not None else []  # in forward order
                for name in to_rescale:
                    module = layers[name]
                    if not isinstance(module, _DENSE) or name == self.output_layer:
                        continue
                    scales[name] = 1.0
                    for _ in range(self.max_scale_iters):
                        std = stds[name]
                        if abs(std / self.target_std - 1.0) <= self.scale_tol:
                            break
                        if std == 0.0 or not math.isfinite(std):
                            rank_zero_warn(
                                f"Initialization: layer {name!r} has output std {std}; it cannot be rescaled."
                            )
                            break
                        module.weight.mul_(self.target_std / std)
                        scales[name] *= self.target_std / std
                        stds = measure()
        finally:
            for handle in handles:
                handle.remove()
            with torch.no_grad():
                for name, b in pl_module.named_buffers():
                    b.copy_(buffers[name])
        return stds, scales


def _named_layers(pl_module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in pl_module.named_modules() if isinstance(m, _DENSE + _RECURRENT)]


def _first_tensor(output: Any) -> torch.Tensor:
    """A layer's output tensor: the sequence output of a recurrent layer."""
    if isinstance(output, tuple):
        output = output[0]
    return output.data if isinstance(output, PackedSequence) else output


def _broadcast_from_rank_zero(trainer: pl.Trainer, modules: list[nn.Module]) -> None:
    params = [p for m in modules for p in m.parameters(recurse=False)]
    values = trainer.strategy.broadcast([p.detach().cpu() for p in params], src=0)
    with torch.no_grad():
        for param, value in zip(params, values):
            param.copy_(value)


def _check_scheme(name: str, value: Any, schemes: Any) -> str:
    names = list(schemes)
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a scheme name (str), but got {name}={value!r} ({type(value).__name__}).")
    if value not in names:
        listed = ", ".join(repr(n) for n in names)
        raise ValueError(f"`{name}` must be one of {listed}, but got {name}={value!r}.{_closest(value, names)}")
    return value


def _closest(value: str, names: list[str]) -> str:
    match = difflib.get_close_matches(value, names, n=1)
    return f" Did you mean {match[0]!r}?" if match else ""
