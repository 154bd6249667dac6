"""lightopt.init: the statistics of each §8.4 initializer, reproducibility and argument checks."""

import math

import pytest
import torch

from lightopt import init


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_variance(w, expected, fourth_moment_ratio):
    """Sample variance within 5 standard errors; ``fourth_moment_ratio`` = E[w⁴]/E[w²]² (uniform 9/5, normal 3)."""
    n = w.numel()
    standard_error = expected * math.sqrt((fourth_moment_ratio - 1) / n)
    sample = w.double().pow(2).mean().item()  # mean 0 is known
    assert abs(sample - expected) <= 5 * standard_error, (sample, expected, standard_error)


UNIFORM, NORMAL = 9 / 5, 3.0


def test_normalized_uniform_is_eq_8_23_on_256_by_128():
    w = init.normalized_uniform_(torch.empty(128, 256), generator=seeded())
    bound = math.sqrt(6 / 384)
    assert bound == 0.125
    assert w.abs().max() <= bound
    assert w.abs().max() > 0.99 * bound  # the whole range is used
    assert_variance(w, 2 / 384, UNIFORM)


def test_normalized_gain_scales_the_bound_and_the_variance():
    w = init.normalized_uniform_(torch.empty(128, 256), gain=2.0, generator=seeded())
    assert 0.99 * 0.25 < w.abs().max() <= 0.25
    assert_variance(w, 4 * 2 / 384, UNIFORM)
    w = init.normalized_normal_(torch.empty(300, 500), gain=0.5, generator=seeded())
    assert_variance(w, 0.25 * 2 / 800, NORMAL)


def test_normalized_normal_has_variance_2_over_m_plus_n():
    w = init.normalized_normal_(torch.empty(300, 500), generator=seeded())
    assert_variance(w, 2 / 800, NORMAL)
    assert abs(w.mean()) < 5 * math.sqrt(2 / 800 / w.numel())


@pytest.mark.parametrize(
    "shape, fan_in",
    [((200, 300), 300), ((64, 16, 3, 3), 16 * 9), ((32, 8, 5), 8 * 5), ((16, 4, 2, 3, 3), 4 * 18)],
    ids=["linear", "conv2d", "conv1d", "conv3d"],
)
def test_heuristic_and_he_use_the_fan_in_including_the_kernel(shape, fan_in):
    w = init.heuristic_uniform_(torch.empty(shape), generator=seeded())
    assert 0.98 / math.sqrt(fan_in) < w.abs().max() <= 1 / math.sqrt(fan_in)
    assert_variance(w, 1 / (3 * fan_in), UNIFORM)

    w = init.he_uniform_(torch.empty(shape), generator=seeded())
    assert 0.98 * math.sqrt(6 / fan_in) < w.abs().max() <= math.sqrt(6 / fan_in)
    assert_variance(w, 2 / fan_in, UNIFORM)

    w = init.he_normal_(torch.empty(shape), generator=seeded())
    assert_variance(w, 2 / fan_in, NORMAL)


@pytest.mark.parametrize(
    "make, shape", [(lambda: torch.nn.Linear(30, 20), (20, 30)), (lambda: torch.nn.Conv2d(3, 5, 3), (5, 3, 3, 3))]
)
def test_heuristic_equals_the_default_weight_init_of_linear_and_conv(make, shape):
    torch.manual_seed(1)
    layer = make()  # draws its weight first, then its bias
    torch.manual_seed(1)
    torch.testing.assert_close(layer.weight.detach(), init.heuristic_uniform_(torch.empty(shape)))


@pytest.mark.parametrize("gain", [1.0, 5 / 3])
def test_orthogonal_square_gives_w_transpose_w_equal_g_squared_identity(gain):
    w = init.orthogonal_(torch.empty(64, 64, dtype=torch.float64), gain=gain, generator=seeded())
    torch.testing.assert_close(w.T @ w, gain**2 * torch.eye(64, dtype=torch.float64), rtol=0, atol=1e-6)


def test_orthogonal_rectangular_and_conv_have_orthonormal_rows():
    w = init.orthogonal_(torch.empty(32, 64, dtype=torch.float64), generator=seeded())
    torch.testing.assert_close(w @ w.T, torch.eye(32, dtype=torch.float64), rtol=0, atol=1e-6)
    w = init.orthogonal_(torch.empty(8, 4, 3, 3, dtype=torch.float64), gain=2.0, generator=seeded())
    flat = w.reshape(8, -1)
    torch.testing.assert_close(flat @ flat.T, 4 * torch.eye(8, dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "shape, k",
    [((50, 100), 15), ((16, 4, 3, 3), 5), ((10, 7), 7), ((10, 7), 1)],
    ids=["linear", "conv-over-cin-kh-kw", "k-equals-fan-in", "k-1"],
)
def test_sparse_gives_every_unit_exactly_k_incoming_weights(shape, k):
    w = init.sparse_(torch.empty(shape), k=k, generator=seeded())
    per_unit = (w.reshape(shape[0], -1) != 0).sum(dim=1)
    assert per_unit.tolist() == [k] * shape[0]


def test_sparse_draws_different_inputs_per_unit_with_the_given_std():
    w = init.sparse_(torch.empty(2000, 100), k=15, std=2.0, generator=seeded())
    chosen = w != 0
    assert len({tuple(row.nonzero().flatten().tolist()) for row in chosen[:50]}) == 50
    per_input = chosen.sum(dim=0).double()  # expected 2000·15/100 = 300 per input
    assert per_input.min() > 200 and per_input.max() < 400
    assert_variance(w[chosen], 4.0, NORMAL)


def test_sparse_differs_from_torch_sparse_which_fixes_fan_out():
    w = torch.nn.init.sparse_(torch.empty(50, 100), sparsity=0.7, generator=seeded())
    assert len(set((w != 0).sum(dim=0).tolist())) == 1  # torch: the same count in every column
    assert len(set((w != 0).sum(dim=1).tolist())) > 1  # but not in every row


def test_bias_heuristics():
    assert init.zeros_(torch.randn(5)).eq(0).all()
    b = init.relu_bias_(torch.randn(7))
    assert b.eq(torch.tensor(0.1)).all()
    assert init.relu_bias_(torch.randn(3), value=0.5).eq(0.5).all()


@pytest.mark.parametrize("frequencies", [[0.5, 0.3, 0.2], [10, 30, 60, 900], torch.tensor([1.0, 1.0])])
def test_output_bias_solves_softmax_b_equal_c(frequencies):
    c = torch.as_tensor(frequencies, dtype=torch.float64)
    c = c / c.sum()
    b = init.output_bias_from_marginals_(torch.empty(len(c), dtype=torch.float64), frequencies)
    torch.testing.assert_close(torch.softmax(b, dim=0), c)
    assert abs(b.mean()) < 1e-12


def test_output_bias_of_a_single_sigmoid_unit():
    b = init.output_bias_from_marginals_(torch.empty(1, dtype=torch.float64), [900, 100])
    torch.testing.assert_close(torch.sigmoid(b), torch.tensor([0.1], dtype=torch.float64))


@pytest.mark.parametrize("module", [torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True), torch.nn.LSTMCell(3, 4)])
@pytest.mark.parametrize("value", [1.0, 2.5])
def test_lstm_forget_bias_sums_to_value_and_leaves_other_slices(module, value):
    torch.nn.init.normal_(module.bias_ih_l0 if isinstance(module, torch.nn.LSTM) else module.bias_ih)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    assert init.lstm_forget_bias_(module, value) is module
    hidden, forget = 4, slice(4, 8)
    biases = {n: p.detach() for n, p in module.named_parameters() if n.startswith("bias")}
    expected_layers = 4 if isinstance(module, torch.nn.LSTM) else 1  # 2 layers x 2 directions
    ih_names = [n for n in biases if n.startswith("bias_ih")]
    assert len(ih_names) == expected_layers
    for ih in ih_names:
        hh = ih.replace("bias_ih", "bias_hh")
        assert biases[ih][forget].eq(value).all() and biases[hh][forget].eq(0).all()
        torch.testing.assert_close(biases[ih][forget] + biases[hh][forget], torch.full((hidden,), value))
    for name, param in module.named_parameters():
        keep = torch.ones(param.shape[0], dtype=torch.bool)
        if name.startswith("bias"):
            keep[forget] = False
        assert torch.equal(param.detach()[keep], before[name][keep]), name


RANDOM = {
    "heuristic_uniform_": lambda t, g: init.heuristic_uniform_(t, generator=g),
    "normalized_uniform_": lambda t, g: init.normalized_uniform_(t, generator=g),
    "normalized_normal_": lambda t, g: init.normalized_normal_(t, generator=g),
    "he_uniform_": lambda t, g: init.he_uniform_(t, generator=g),
    "he_normal_": lambda t, g: init.he_normal_(t, generator=g),
    "orthogonal_": lambda t, g: init.orthogonal_(t, generator=g),
    "sparse_": lambda t, g: init.sparse_(t, k=3, generator=g),
}


@pytest.mark.parametrize("name", RANDOM)
def test_a_seeded_generator_reproduces_the_weights_in_place(name):
    fill = RANDOM[name]
    a, b, c = torch.empty(6, 5, 2), torch.empty(6, 5, 2), torch.empty(6, 5, 2)
    assert fill(a, seeded(7)) is a
    fill(b, seeded(7))
    fill(c, seeded(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_functions_work_on_parameters_in_place():
    layer = torch.nn.Linear(20, 10)
    weight = layer.weight
    init.sparse_(layer.weight, k=4, generator=seeded())
    init.zeros_(layer.bias)
    assert layer.weight is weight and layer.weight.requires_grad
    assert ((layer.weight != 0).sum(dim=1) == 4).all() and layer.bias.eq(0).all()


BAD_INPUTS = [
    (lambda: init.sparse_(torch.empty(4, 10), k=11), ValueError, r"`k` must be <= the fan-in m=10 .* but got k=11"),
    (lambda: init.sparse_(torch.empty(4, 2, 3), k=7), ValueError, r"fan-in m=6 .*shape \(4, 2, 3\)"),
    (lambda: init.sparse_(torch.empty(4, 10), k=0), ValueError, r"`k` must be an integer >= 1, but got k=0\."),
    (lambda: init.sparse_(torch.empty(4, 10), k=2.0), TypeError, r"`k` must be an integer, but got k=2.0"),
    (lambda: init.sparse_(torch.empty(4, 10), k=2, std=-1.0), ValueError, r"`std` must be > 0, but got std=-1.0\."),
    (lambda: init.sparse_(torch.empty(4, 10), k=2, std=0), ValueError, r"`std` must be > 0, but got std=0.0\."),
    (lambda: init.normalized_uniform_(torch.empty(4, 10), gain=0), ValueError, r"`gain` must be > 0, but got gain=0"),
    (lambda: init.orthogonal_(torch.empty(4, 4), gain="2"), TypeError, r"`gain` must be a real number"),
    (lambda: init.heuristic_uniform_(torch.empty(5)), ValueError, r"at least 2 dimensions .* shape \(5,\)"),
    (lambda: init.he_normal_([[1.0, 2.0]]), TypeError, r"`tensor` must be a torch.Tensor, but got tensor of type list"),
    (lambda: init.relu_bias_(torch.empty(3), value="0.1"), TypeError, r"`value` must be a real number"),
    (
        lambda: init.output_bias_from_marginals_(torch.empty(3), [0.5, 0.0, 0.5]),
        ValueError,
        r"`class_frequencies` must all be finite and > 0 .*pseudo-count.*\[0.5, 0.0, 0.5\]",
    ),
    (lambda: init.output_bias_from_marginals_(torch.empty(2), [1, -1]), ValueError, r"must all be finite and > 0"),
    (
        lambda: init.output_bias_from_marginals_(torch.empty(3), [0.5, 0.5]),
        ValueError,
        r"one entry per output unit \(3\).* but got 2 entries",
    ),
    (lambda: init.output_bias_from_marginals_(torch.empty(1), [1.0]), ValueError, r"at least 2 entries"),
    (
        lambda: init.output_bias_from_marginals_(torch.empty(2), "ab"),
        TypeError,
        r"`class_frequencies` must be a sequence",
    ),
    (lambda: init.output_bias_from_marginals_(torch.empty(2), {0: 1, 1: 2}), TypeError, r"must be a sequence"),
    (lambda: init.output_bias_from_marginals_(torch.empty(2), ["a", "b"]), TypeError, r"must contain only numbers"),
    (lambda: init.output_bias_from_marginals_(torch.empty(2, 2), [1, 1]), ValueError, r"`bias` must be 1-dimensional"),
    (lambda: init.lstm_forget_bias_(torch.nn.GRU(3, 4)), TypeError, r"`lstm` must be a torch.nn.LSTM .* GRU"),
    (lambda: init.lstm_forget_bias_(torch.nn.LSTM(3, 4, bias=False)), ValueError, r"bias=False"),
]


@pytest.mark.parametrize("call, exception, match", BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(call, exception, match):
    with pytest.raises(exception, match=match):
        call()


def test_bad_sparse_arguments_leave_the_tensor_untouched():
    w = torch.ones(4, 10)
    with pytest.raises(ValueError):
        init.sparse_(w, k=11)
    assert w.eq(1).all()
