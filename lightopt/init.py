r"""Parameter initialization, §8.4: in-place functions that fill a tensor and return it.

===========================  =================================  ===========================
function                     book                               distribution
===========================  =================================  ===========================
heuristic_uniform_           §8.4, the heuristic                U(−1/√m, 1/√m)
normalized_uniform_          §8.4, eq. 8.23 (Glorot & Bengio)   U(±g·√(6/(m+n)))
normalized_normal_           §8.4, normal variant of eq. 8.23   N(0, g²·2/(m+n))
he_uniform_, he_normal_      not in the book (He et al., ReLU)  Var = 2/m
orthogonal_                  §8.4 (Saxe et al.)                 g·(random orthogonal)
sparse_                      §8.4 (Martens)                     k inputs per unit, N(0, σ²)
zeros_, relu_bias_           §8.4, bias heuristics              0 / 0.1
output_bias_from_marginals_  §8.4, softmax(b) = c               b = log c − mean(log c)
lstm_forget_bias_            §8.4 (Jozefowicz et al.)           b_if + b_hf = 1
===========================  =================================  ===========================

m is the fan-in (inputs per unit) and n the fan-out of a weight of shape ``(out, in, *kernel)``:
``m = in·∏kernel`` and ``n = out·∏kernel``, so a convolution's fan-in is C_in·k_h·k_w (per group).
Every random function takes an optional ``generator``; as in ``torch.nn.init``, it must live on
the tensor's device.

Example:
    >>> import torch
    >>> from lightopt import init
    >>> layer = torch.nn.Linear(256, 128)
    >>> _ = init.normalized_uniform_(layer.weight, generator=torch.Generator().manual_seed(0))
    >>> _ = init.zeros_(layer.bias)
    >>> bool(layer.weight.abs().max() <= (6 / (256 + 128)) ** 0.5), layer.bias.abs().sum().item()
    (True, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightopt._validation import check_int, check_number, check_range

__all__ = [
    "heuristic_uniform_",
    "normalized_uniform_",
    "normalized_normal_",
    "he_uniform_",
    "he_normal_",
    "orthogonal_",
    "sparse_",
    "zeros_",
    "relu_bias_",
    "output_bias_from_marginals_",
    "lstm_forget_bias_",
]


def heuristic_uniform_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The heuristic of §8.4: :math:`W_{ij} \sim U(-1/\sqrt m, 1/\sqrt m)`, m = fan-in.

    Equal to the default weight init of ``nn.Linear`` and ``nn.Conv*d``
    (``kaiming_uniform_(a=√5)``); written here through ``torch.nn.init.uniform_`` with the bound
    stated directly. Unlike those layers, lightopt leaves biases to the bias heuristics below.

    Example:
        >>> w = heuristic_uniform_(torch.empty(3, 100), generator=torch.Generator().manual_seed(0))
        >>> bool(w.abs().max() <= 0.1)
        True
    """
    fan_in, _ = _fan_in_and_fan_out(tensor)
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(tensor, -bound, bound, generator=generator)


def normalized_uniform_(
    tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Normalized initialization, eq. 8.23 (§8.4, Glorot & Bengio 2010).

    .. math:: W_{ij} \sim U\left(-g\sqrt{\tfrac{6}{m+n}},\ g\sqrt{\tfrac{6}{m+n}}\right),
        \qquad \operatorname{Var} W_{ij} = g^2\,\tfrac{2}{m+n}

    The book's formula is g = 1; ``gain`` g scales it. This is ``torch.nn.init.xavier_uniform_``,
    reused as is.

    Example:
        >>> w = normalized_uniform_(torch.empty(128, 256), generator=torch.Generator().manual_seed(0))
        >>> bool(w.abs().max() <= 0.125)
        True
    """
    _fan_in_and_fan_out(tensor)
    gain = _check_gain(gain)
    return nn.init.xavier_uniform_(tensor, gain=gain, generator=generator)


def normalized_normal_(
    tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""The normal variant of eq. 8.23 (§8.4): :math:`W_{ij} \sim N(0,\ g^2\cdot 2/(m+n))`.

    Same variance as :func:`normalized_uniform_`; the book notes that Gaussian versus uniform
    "does not seem to matter much". This is ``torch.nn.init.xavier_normal_``, reused as is.

    Example:
        >>> w = normalized_normal_(torch.empty(500, 300), generator=torch.Generator().manual_seed(0))
        >>> round(w.var().item() * 800, 1)
        2.0
    """
    _fan_in_and_fan_out(tensor)
    gain = _check_gain(gain)
    return nn.init.xavier_normal_(tensor, gain=gain, generator=generator)


def he_uniform_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""He et al. (2015) for ReLU units: :math:`W_{ij} \sim U(-\sqrt{6/m}, \sqrt{6/m})`, Var = 2/m.

    Not in the book's text, but in its spirit: the variance that keeps a ReLU layer's output
    scale through depth, the ReLU counterpart of eq. 8.23. This is
    ``torch.nn.init.kaiming_uniform_(mode="fan_in", nonlinearity="relu")``.

    Example:
        >>> w = he_uniform_(torch.empty(3, 24), generator=torch.Generator().manual_seed(0))
        >>> bool(w.abs().max() <= 0.5)
        True
    """
    _fan_in_and_fan_out(tensor)
    return nn.init.kaiming_uniform_(tensor, mode="fan_in", nonlinearity="relu", generator=generator)


def he_normal_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""He et al. (2015) for ReLU units: :math:`W_{ij} \sim N(0, 2/m)` (not in the book's text).

    See :func:`he_uniform_`. This is ``torch.nn.init.kaiming_normal_(mode="fan_in",
    nonlinearity="relu")``.

    Example:
        >>> w = he_normal_(torch.empty(400, 200), generator=torch.Generator().manual_seed(0))
        >>> round(w.var().item() * 100, 1)
        1.0
    """
    _fan_in_and_fan_out(tensor)
    return nn.init.kaiming_normal_(tensor, mode="fan_in", nonlinearity="relu", generator=generator)


def orthogonal_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Orthogonal initialization (§8.4, Saxe et al. 2013): W = g·Q with Q random orthogonal.

    For a square W, :math:`W^\top W = g^2 I`; a rectangular W has orthonormal rows or columns,
    whichever are fewer, and a conv weight is flattened to ``(out, in·∏kernel)``. This is
    ``torch.nn.init.orthogonal_`` (QR of a Gaussian matrix), reused as is. The book gives no
    values for g; ``torch.nn.init.calculate_gain`` (tanh 5/3, ReLU √2) gives PyTorch's
    conventions, not the gains Saxe et al. derive.

    Example:
        >>> w = orthogonal_(torch.empty(4, 4), gain=2.0, generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(w.T @ w, 4 * torch.eye(4), atol=1e-5)
        True
    """
    _fan_in_and_fan_out(tensor)
    gain = _check_gain(gain)
    return nn.init.orthogonal_(tensor, gain=gain, generator=generator)


def sparse_(tensor: torch.Tensor, k: int, std: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Sparse initialization (§8.4, Martens 2010): exactly k non-zero incoming weights per unit.

    Each output unit (row ``W[i]``, flattened over ``(in, *kernel)`` for a convolution, so over
    C_in·k_h·k_w) draws k of its m inputs without replacement; their weights are
    :math:`N(0, \sigma^2)` and the rest are 0. The total input of a unit is then independent of m
    without shrinking the individual weights. Martens used k = 15 and σ = 1.

    Differences from ``torch.nn.init.sparse_``: that zeroes a *fraction* of each column (fixing
    fan-out, the weights leaving an input), with σ = 0.01 by default; this fixes the k weights
    entering each unit, as the book describes.

    Args:
        tensor: a weight of shape ``(out, in, *kernel)``.
        k: non-zero weights per unit, in [1, m].
        std: σ > 0 of the non-zero weights.
        generator: random source for the chosen inputs and the values (on the tensor's device).

    Example:
        >>> w = sparse_(torch.empty(4, 50), k=15, generator=torch.Generator().manual_seed(0))
        >>> (w != 0).sum(dim=1).tolist()
        [15, 15, 15, 15]
    """
    fan_in, _ = _fan_in_and_fan_out(tensor)
    k = check_int("k", k, low=1)
    std = check_range("std", std, 0.0, low_inclusive=False)
    if k > fan_in:
        raise ValueError(
            f"`k` must be <= the fan-in m={fan_in} of a weight of shape {tuple(tensor.shape)}, but got k={k}. "
            "Lower `k` or use a dense scheme for this layer."
        )
    rows = tensor.shape[0]
    device = tensor.device if generator is None else generator.device
    dtype = tensor.dtype if tensor.is_floating_point() else torch.get_default_dtype()
    with torch.no_grad():
        keys = torch.rand(rows, fan_in, generator=generator, device=device)
        chosen = keys.topk(k, dim=1).indices  # k distinct inputs per unit, uniformly at random
        values = torch.randn(rows, k, generator=generator, device=device, dtype=dtype).mul_(std)
        dense = torch.zeros(rows, fan_in, device=device, dtype=dtype).scatter_(1, chosen, values)
        tensor.copy_(dense.reshape(tensor.shape))
    return tensor


def zeros_(tensor: torch.Tensor) -> torch.Tensor:
    """Zero biases (§8.4): "compatible with most weight initialization schemes".

    This is ``torch.nn.init.zeros_``. It differs from ``nn.Linear``'s default bias, U(±1/√m).

    Example:
        >>> zeros_(torch.ones(3))
        tensor([0., 0., 0.])
    """
    _check_tensor("tensor", tensor)
    return nn.init.zeros_(tensor)


def relu_bias_(bias: torch.Tensor, value: float = 0.1) -> torch.Tensor:
    """The ReLU hidden-unit bias of §8.4: a small positive constant (0.1) to avoid saturation at init.

    The book advises against it together with random-walk initialization. This is
    ``torch.nn.init.constant_``.

    Example:
        >>> relu_bias_(torch.zeros(3))
        tensor([0.1000, 0.1000, 0.1000])
    """
    _check_tensor("bias", bias)
    value = check_number("value", value)
    return nn.init.constant_(bias, value)


def output_bias_from_marginals_(bias: torch.Tensor, class_frequencies: Any) -> torch.Tensor:
    r"""Output bias from the marginal statistics of the output (§8.4): solve softmax(b) = c.

    .. math:: b = \log c - \frac{1}{K}\sum_k \log c_k

    ``class_frequencies`` may be counts or frequencies (they are normalized to sum to 1). The
    mean is subtracted because softmax is invariant to a constant shift, which keeps b centred.
    For a single sigmoid output (a bias with one entry) pass the two frequencies
    ``(negative, positive)``; then :math:`b = \log(c_1/c_0)` and sigmoid(b) = c_1.

    A class with frequency 0 would need b = −∞ and is rejected; add a pseudo-count to every class
    count (e.g. 1) instead.

    Example:
        >>> b = output_bias_from_marginals_(torch.empty(3), [0.5, 0.3, 0.2])
        >>> torch.softmax(b, dim=0)
        tensor([0.5000, 0.3000, 0.2000])
    """
    _check_tensor("bias", bias)
    c = check_class_frequencies(class_frequencies)
    if bias.dim() != 1:
        raise ValueError(f"`bias` must be 1-dimensional, but got a tensor of shape {tuple(bias.shape)}.")
    log_c = c.log()
    if bias.numel() == c.numel():
        b = log_c - log_c.mean()
    elif bias.numel() == 1 and c.numel() == 2:
        b = (log_c[1] - log_c[0]).reshape(1)
    else:
        raise ValueError(
            f"`class_frequencies` must have one entry per output unit ({bias.numel()}), or two for a single "
            f"sigmoid output, but got {c.numel()} entries."
        )
    with torch.no_grad():
        bias.copy_(b.to(device=bias.device, dtype=bias.dtype))
    return bias


def lstm_forget_bias_(lstm: nn.LSTM | nn.LSTMCell, value: float = 1.0) -> nn.LSTM | nn.LSTMCell:
    r"""The forget-gate bias of §8.4 (Jozefowicz et al. 2015): :math:`b_{if} + b_{hf} = 1`.

    PyTorch's LSTM adds two biases to every gate pre-activation, ``bias_ih`` and ``bias_hh``, with
    gates in the order i, f, g, o, so the forget gate is the slice ``[H:2H]`` of each. This sets
    that slice of ``bias_ih`` to ``value`` and of ``bias_hh`` to 0, in every layer and direction
    (filling both with 1 would give an effective bias of 2). Other slices are left untouched.

    Example:
        >>> lstm = torch.nn.LSTM(3, 2)
        >>> _ = lstm_forget_bias_(lstm)
        >>> (lstm.bias_ih_l0[2:4] + lstm.bias_hh_l0[2:4]).tolist()
        [1.0, 1.0]
    """
    if not isinstance(lstm, (nn.LSTM, nn.LSTMCell)):
        raise TypeError(
            f"`lstm` must be a torch.nn.LSTM or torch.nn.LSTMCell, but got lstm of type {type(lstm).__name__}."
        )
    value = check_number("value", value)
    if not lstm.bias:
        raise ValueError("`lstm` has no biases (bias=False); build it with bias=True to set a forget-gate bias.")
    hidden = lstm.hidden_size
    forget = slice(hidden, 2 * hidden)
    with torch.no_grad():
        for name, param in lstm.named_parameters(recurse=False):
            if name.startswith("bias_ih"):
                param[forget] = value
            elif name.startswith("bias_hh"):
                param[forget] = 0.0
    return lstm


def _fan_in_and_fan_out(tensor: torch.Tensor) -> tuple[int, int]:
    """(m, n) of a weight ``(out, in, *kernel)``: ``(in·∏kernel, out·∏kernel)``, as in ``torch.nn.init``."""
    _check_tensor("tensor", tensor)
    if tensor.dim() < 2:
        raise ValueError(
            f"`tensor` must be a weight with at least 2 dimensions (out, in, *kernel), but got shape "
            f"{tuple(tensor.shape)}. Use zeros_ or relu_bias_ for biases."
        )
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def _check_tensor(name: str, value: Any) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, but got {name} of type {type(value).__name__}.")


def _check_gain(gain: Any) -> float:
    return check_range("gain", gain, 0.0, low_inclusive=False)


def check_class_frequencies(class_frequencies: Any) -> torch.Tensor:
    """Class counts or frequencies as a float64 vector summing to 1; every entry finite and > 0.

    Shared with ``lightopt.callbacks.Initialization`` (``output_marginals``), hence not private; not in ``__all__``.
    """
    if isinstance(class_frequencies, (str, bytes)) or not isinstance(class_frequencies, (Sequence, torch.Tensor)):
        raise TypeError(
            "`class_frequencies` must be a sequence or 1-D tensor of numbers, but got "
            f"class_frequencies={class_frequencies!r} ({type(class_frequencies).__name__})."
        )
    try:
        c = torch.as_tensor(class_frequencies, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"`class_frequencies` must contain only numbers, but got class_frequencies={class_frequencies!r}."
        ) from err
    shown = c.tolist()
    if c.dim() != 1 or c.numel() < 2:
        raise ValueError(f"`class_frequencies` must be 1-D with at least 2 entries, but got class_frequencies={shown}.")
    if not bool(torch.isfinite(c).all()) or bool((c <= 0).any()):
        raise ValueError(
            "`class_frequencies` must all be finite and > 0 (a zero frequency needs a bias of -inf); add a "
            f"pseudo-count such as 1 to every class count, but got class_frequencies={shown}."
        )
    return c / c.sum()
