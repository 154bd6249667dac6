"""lightopt's first-order optimizers against naive float64 transcriptions of the book."""

import io

import numpy as np
import pytest
import torch

from lightopt.optim import SGD, AdaGrad, Adam, RMSProp
from tests.reference import first_order as ref

STEPS = 60
CHANGE_AT = 30  # the learning rate of every group is multiplied by FACTOR before this step
FACTOR = 0.3
GROUP_LRS = (0.05, 0.02)
SIZES = (4, 2)  # coordinates in group 0 (a 2x2 weight) and group 1 (a vector)

_rng = np.random.default_rng(0)
_Q, _ = np.linalg.qr(_rng.normal(size=(6, 6)))
A = _Q @ np.diag([0.5, 1.0, 2.0, 3.0, 5.0, 8.0]) @ _Q.T
B = _rng.normal(size=6)
THETA0 = _rng.normal(size=6)


def grad_fn(scale=1.0):
    """Gradient of J(θ) = scale·(½θᵀAθ − bᵀθ + 0.025·Σθ⁴), quartic so that no step is linear."""
    return lambda theta: scale * (A @ theta - B + 0.1 * theta**3)


def loss_torch(theta, scale=1.0):
    a, b = torch.from_numpy(A), torch.from_numpy(B)
    return scale * (0.5 * theta @ a @ theta - b @ theta + 0.025 * (theta**4).sum())


def lr_schedule(k):
    lrs = np.repeat(np.array(GROUP_LRS), SIZES)
    return lrs * (FACTOR if k >= CHANGE_AT else 1.0)


def constant(value):
    return lambda k: value


def run(make_optimizer, steps=STEPS, scale=1.0, closure_step=False, dtype=torch.float64, change_lr=True):
    """Run an optimizer on the test objective with two param groups; return the iterates (float64)."""
    w1 = torch.nn.Parameter(torch.tensor(THETA0[:4], dtype=dtype).reshape(2, 2))
    w2 = torch.nn.Parameter(torch.tensor(THETA0[4:], dtype=dtype))
    opt = make_optimizer([{"params": [w1], "lr": GROUP_LRS[0]}, {"params": [w2], "lr": GROUP_LRS[1]}])

    def closure():
        opt.zero_grad()
        loss = loss_torch(torch.cat([w1.reshape(-1), w2]).double(), scale)
        loss.backward()
        return loss

    out = []
    for k in range(steps):
        if change_lr and k == CHANGE_AT:
            for group in opt.param_groups:
                group["lr"] *= FACTOR
        if closure_step:
            opt.step(closure)
        else:
            closure()
            opt.step()
        out.append(torch.cat([w1.detach().reshape(-1), w2.detach()]).double().numpy().copy())
    return out, opt


def assert_trajectories(actual, expected, rtol=1e-10, atol=1e-12):
    assert len(actual) == len(expected)
    for k, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"iterate {k + 1}")


# -- against the book, two groups, lr changed mid-run ---------------------------------------------------------


KERNELS = [dict(foreach=False), dict(foreach=True), dict(fused=True), dict()]  # dict(): the default path
KERNEL_IDS = ["loop", "foreach", "fused", "default"]


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNEL_IDS)
def test_sgd_is_algorithm_8_1(kernel):
    actual, _ = run(lambda p: SGD(p, lr=0.1, **kernel))
    assert_trajectories(actual, ref.sgd(THETA0, grad_fn(), lr_schedule, STEPS))


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNEL_IDS)
def test_momentum_is_algorithm_8_2(kernel):
    actual, _ = run(lambda p: SGD(p, lr=0.1, momentum=0.9, **kernel))
    expected = [theta for theta, _ in ref.momentum(THETA0, grad_fn(), lr_schedule, constant(0.9), STEPS)]
    assert_trajectories(actual, expected)


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNEL_IDS)
def test_nesterov_lookahead_is_algorithm_8_3_after_change_of_variables(kernel):
    actual, _ = run(lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, **kernel))
    book = ref.nesterov(THETA0, grad_fn(), lr_schedule, constant(0.9), STEPS)
    assert_trajectories(actual, [theta + 0.9 * v for theta, v in book])


@pytest.mark.parametrize("foreach", [False, True])
def test_nesterov_interim_is_algorithm_8_3(foreach):
    actual, opt = run(
        lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, mode="interim", foreach=foreach), closure_step=True
    )
    book = ref.nesterov(THETA0, grad_fn(), lr_schedule, constant(0.9), STEPS)
    assert_trajectories(actual, [theta for theta, _ in book])
    velocity = torch.cat([opt.velocity(p).reshape(-1) for g in opt.param_groups for p in g["params"]])
    np.testing.assert_allclose(velocity.numpy(), book[-1][1], rtol=1e-10, atol=1e-12)


def test_momentum_differs_from_torch_when_lr_changes():
    ours, _ = run(lambda p: SGD(p, lr=0.1, momentum=0.9))
    theirs, _ = run(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    np.testing.assert_allclose(ours[CHANGE_AT - 1], theirs[CHANGE_AT - 1], rtol=1e-12)
    assert np.abs(ours[-1] - theirs[-1]).max() > 1e-3


def test_momentum_with_zero_lr_keeps_coasting():
    def schedule(k):
        return lr_schedule(k) * (0.0 if 10 <= k < 15 else 1.0)

    w = torch.nn.Parameter(torch.tensor(THETA0[:4], dtype=torch.float64))
    w2 = torch.nn.Parameter(torch.tensor(THETA0[4:], dtype=torch.float64))
    opt = SGD([{"params": [w], "lr": GROUP_LRS[0]}, {"params": [w2], "lr": GROUP_LRS[1]}], lr=0.1, momentum=0.9)
    out = []
    for k in range(25):
        for group, lr in zip(opt.param_groups, (schedule(k)[0], schedule(k)[-1])):
            group["lr"] = float(lr)
        opt.zero_grad()
        loss_torch(torch.cat([w, w2])).backward()
        opt.step()
        out.append(torch.cat([w, w2]).detach().numpy().copy())
    expected = [theta for theta, _ in ref.momentum(THETA0, grad_fn(), schedule, constant(0.9), 25)]
    assert_trajectories(out, expected)


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNEL_IDS)
def test_adagrad_is_algorithm_8_4(kernel):
    actual, _ = run(lambda p: AdaGrad(p, **kernel))
    assert_trajectories(actual, ref.adagrad(THETA0, grad_fn(), lr_schedule, 1e-7, STEPS))


@pytest.mark.parametrize("foreach", [False, True, None])
def test_rmsprop_is_algorithm_8_5(foreach):
    actual, _ = run(lambda p: RMSProp(p, rho=0.9, eps=1e-6, foreach=foreach))
    assert_trajectories(actual, ref.rmsprop(THETA0, grad_fn(), lr_schedule, 0.9, 1e-6, STEPS))


@pytest.mark.parametrize("foreach", [False, True])
def test_rmsprop_with_eps_outside_the_root_is_torchs_placement(foreach):
    actual, _ = run(lambda p: RMSProp(p, rho=0.9, eps=1e-6, eps_in_sqrt=False, foreach=foreach))
    assert_trajectories(actual, ref.rmsprop(THETA0, grad_fn(), lr_schedule, 0.9, 1e-6, STEPS, delta_outside=True))


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNEL_IDS)
def test_adagrad_with_an_initial_accumulator(kernel):
    actual, _ = run(lambda p: AdaGrad(p, initial_accumulator_value=0.3, **kernel))
    assert_trajectories(actual, ref.adagrad(THETA0, grad_fn(), lr_schedule, 1e-7, STEPS, r0=0.3))


MAXIMIZE = {
    "momentum": (
        lambda p: SGD(p, lr=0.1, momentum=0.9, maximize=True),
        lambda: [t for t, _ in ref.momentum(THETA0, grad_fn(), lr_schedule, constant(0.9), STEPS)],
    ),
    "adagrad": (lambda p: AdaGrad(p, maximize=True), lambda: ref.adagrad(THETA0, grad_fn(), lr_schedule, 1e-7, STEPS)),
    "rmsprop": (
        lambda p: RMSProp(p, momentum=0.8, maximize=True),
        lambda: [t for t, _ in ref.rmsprop_momentum(THETA0, grad_fn(), lr_schedule, 0.9, 1e-6, constant(0.8), STEPS)],
    ),
    "adam": (
        lambda p: Adam(p, lr=0.01, maximize=True),
        lambda: ref.adam(THETA0, grad_fn(), lr_schedule, 0.9, 0.999, 1e-8, STEPS),
    ),
}


@pytest.mark.parametrize("name", MAXIMIZE)
def test_maximize_on_minus_j_is_the_book_on_j(name):
    make, book = MAXIMIZE[name]
    actual, _ = run(make, scale=-1.0)
    assert_trajectories(actual, book())


@pytest.mark.parametrize("foreach", [False, True])
def test_rmsprop_momentum_in_book_units(foreach):
    actual, _ = run(lambda p: RMSProp(p, momentum=0.8, foreach=foreach))
    book = ref.rmsprop_momentum(THETA0, grad_fn(), lr_schedule, 0.9, 1e-6, constant(0.8), STEPS)
    assert_trajectories(actual, [theta for theta, _ in book])


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("mode", ["lookahead", "interim"])
def test_rmsprop_nesterov_is_algorithm_8_6(foreach, mode):
    actual, _ = run(
        lambda p: RMSProp(p, momentum=0.8, nesterov=True, mode=mode, foreach=foreach), closure_step=mode == "interim"
    )
    book = ref.rmsprop_nesterov(THETA0, grad_fn(), lr_schedule, 0.9, 1e-6, constant(0.8), STEPS)
    shift = 0.8 if mode == "lookahead" else 0.0
    assert_trajectories(actual, [theta + shift * v for theta, v in book])


def test_rmsprop_delta_inside_the_root_matters_for_small_gradients():
    scale = 1e-4  # gradients of order 1e-4: (1 − ρ)g² ≈ 1e-9, comparable to δ = 1e-6 only inside the root
    ours, _ = run(lambda p: RMSProp(p, rho=0.9, eps=1e-6), scale=scale, steps=20, change_lr=False)
    book = ref.rmsprop(THETA0, grad_fn(scale), lambda k: lr_schedule(0), 0.9, 1e-6, 20)
    assert_trajectories(ours, book)
    # The closest torch setting puts sqrt(δ) outside the root; it still misses the book by over 1%.
    theirs, _ = run(lambda p: torch.optim.RMSprop(p, alpha=0.9, eps=1e-3), scale=scale, steps=20, change_lr=False)
    book_step = book[0] - THETA0
    torch_step = theirs[0] - THETA0
    assert np.abs(torch_step - book_step).max() > 0.01 * np.abs(book_step).max()


@pytest.mark.parametrize("kernel", KERNELS, ids=KERNEL_IDS)
def test_adam_is_algorithm_8_7(kernel):
    actual, _ = run(lambda p: Adam(p, lr=0.01, **kernel))
    assert_trajectories(actual, ref.adam(THETA0, grad_fn(), lr_schedule, 0.9, 0.999, 1e-8, STEPS))


# -- kernels, state, dtypes -----------------------------------------------------------------------------------

CONFIGS = {
    "sgd": lambda p, **kw: SGD(p, lr=0.1, **kw),
    "momentum": lambda p, **kw: SGD(p, lr=0.1, momentum=0.9, **kw),
    "nesterov": lambda p, **kw: SGD(p, lr=0.1, momentum=0.9, nesterov=True, **kw),
    "nesterov-interim": lambda p, **kw: SGD(p, lr=0.1, momentum=0.9, nesterov=True, mode="interim", **kw),
    "adagrad": lambda p, **kw: AdaGrad(p, **kw),
    "rmsprop": lambda p, **kw: RMSProp(p, **kw),
    "rmsprop-momentum": lambda p, **kw: RMSProp(p, momentum=0.9, weight_decay=0.01, **kw),
    "rmsprop-nesterov": lambda p, **kw: RMSProp(p, momentum=0.9, nesterov=True, **kw),
    "rmsprop-interim": lambda p, **kw: RMSProp(p, momentum=0.9, nesterov=True, mode="interim", **kw),
    "adam": lambda p, **kw: Adam(p, lr=0.01, **kw),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_foreach_equals_single_tensor(name):
    single, _ = run(lambda p: CONFIGS[name](p, foreach=False), closure_step=True, steps=40)
    multi, _ = run(lambda p: CONFIGS[name](p, foreach=True), closure_step=True, steps=40)
    assert_trajectories(multi, single, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_round_trip_continues_exactly(name):
    uninterrupted, _ = run(CONFIGS[name], closure_step=True)

    first, opt = run(CONFIGS[name], steps=CHANGE_AT + 5, closure_step=True)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    # A fresh process: new parameters at the saved values, a new optimizer, the saved state.
    theta = first[-1]
    w1 = torch.nn.Parameter(torch.tensor(theta[:4]).reshape(2, 2))
    w2 = torch.nn.Parameter(torch.tensor(theta[4:]))
    resumed = CONFIGS[name]([{"params": [w1], "lr": GROUP_LRS[0]}, {"params": [w2], "lr": GROUP_LRS[1]}])
    resumed.load_state_dict(saved)

    def closure():
        resumed.zero_grad()
        loss = loss_torch(torch.cat([w1.reshape(-1), w2]))
        loss.backward()
        return loss

    rest = []
    for _ in range(STEPS - CHANGE_AT - 5):
        resumed.step(closure)
        rest.append(torch.cat([w1.detach().reshape(-1), w2.detach()]).numpy().copy())
    for a, e in zip(first + rest, uninterrupted):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("name", CONFIGS)
def test_float32_tracks_float64(name):
    single, _ = run(CONFIGS[name], closure_step=True, dtype=torch.float32, steps=20)
    double, _ = run(CONFIGS[name], closure_step=True, dtype=torch.float64, steps=20)
    assert_trajectories(single, double, rtol=1e-4, atol=1e-5)


def test_parameter_without_gradient_is_left_alone():
    used = torch.nn.Parameter(torch.ones(3))
    unused = torch.nn.Parameter(torch.ones(3))
    opt = SGD([used, unused], lr=0.1, momentum=0.9, fused=True)
    for _ in range(3):
        opt.zero_grad()
        used.sum().backward()
        opt.step()
    assert torch.equal(unused.detach(), torch.ones(3))
    unused.grad = torch.ones(3)  # first gradient for this parameter, after others have momentum
    used.grad = torch.ones(3)
    opt.step()
    assert torch.allclose(unused.detach(), torch.full((3,), 0.9))


def test_interim_mode_without_closure_is_a_clear_error():
    w = torch.nn.Parameter(torch.ones(2))
    opt = SGD([w], lr=0.1, momentum=0.9, nesterov=True, mode="interim")
    w.sum().backward()
    with pytest.raises(ValueError, match=r"needs the closure.*mode='lookahead'"):
        opt.step()


def test_sparse_gradients_are_rejected():
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = RMSProp(emb.parameters())
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(TypeError, match="sparse"):
        opt.step()


# -- bad arguments ---------------------------------------------------------------------------------------------

P = [torch.nn.Parameter(torch.zeros(1))]


@pytest.mark.parametrize(
    "factory, exception, match",
    [
        (lambda: SGD(P, lr=-0.1), ValueError, r"`lr` must be >= 0, but got lr=-0.1"),
        (lambda: SGD(P, lr="0.1"), TypeError, r"`lr` must be a real number, but got lr='0.1'"),
        (lambda: SGD(P, lr=float("nan")), ValueError, r"`lr` must not be NaN"),
        (lambda: SGD(P, lr=0.1, momentum=1.0), ValueError, r"`momentum` must be in \[0, 1\), but got momentum=1.0"),
        (lambda: SGD(P, lr=0.1, momentum=-0.1), ValueError, r"`momentum` must be in \[0, 1\)"),
        (lambda: SGD(P, lr=0.1, nesterov=True), ValueError, r"`nesterov=True` needs momentum"),
        (lambda: SGD(P, lr=0.1, nesterov=1), TypeError, r"`nesterov` must be True or False"),
        (
            lambda: SGD(P, lr=0.1, momentum=0.9, nesterov=True, mode="book"),
            ValueError,
            r"`mode` must be one of 'lookahead', 'interim', but got mode='book'",
        ),
        (lambda: SGD(P, lr=0.1, weight_decay=-1), ValueError, r"`weight_decay` must be >= 0"),
        (lambda: SGD(P, lr=0.1, foreach=True, fused=True), ValueError, r"cannot both be True"),
        (lambda: SGD([{"params": P, "momentum": 1.5}], lr=0.1), ValueError, r"momentum=1.5"),
        (lambda: AdaGrad(P, eps=0.0), ValueError, r"`eps` must be > 0, but got eps=0.0"),
        (lambda: AdaGrad(P, lr=-1), ValueError, r"`lr` must be >= 0"),
        (lambda: AdaGrad([{"params": P, "lr_decay": 0.1}]), ValueError, r"has no `lr_decay`"),
        (lambda: RMSProp(P, rho=1.0), ValueError, r"`rho` must be in \[0, 1\), but got rho=1.0"),
        (lambda: RMSProp(P, rho=-0.5), ValueError, r"`rho` must be in \[0, 1\)"),
        (lambda: RMSProp(P, eps=-1e-6), ValueError, r"`eps` must be > 0"),
        (lambda: RMSProp(P, momentum=1.2), ValueError, r"momentum=1.2"),
        (lambda: RMSProp(P, nesterov=True), ValueError, r"`nesterov=True` needs momentum"),
        (lambda: RMSProp(P, momentum=0.5, nesterov=True, mode=None), ValueError, r"`mode` must be one of"),
        (lambda: Adam(P, betas=(0.9, 1.0)), ValueError, r"`betas\[1\]` must be in \[0, 1\), but got betas\[1\]=1.0"),
        (lambda: Adam(P, betas=(-0.1, 0.999)), ValueError, r"`betas\[0\]` must be in \[0, 1\)"),
        (lambda: Adam(P, betas=0.9), TypeError, r"`betas` must be a pair"),
        (lambda: Adam(P, eps=0), ValueError, r"`eps` must be > 0"),
        (lambda: Adam([{"params": P, "amsgrad": True}]), ValueError, r"has no `amsgrad`"),
    ],
)
def test_bad_arguments(factory, exception, match):
    with pytest.raises(exception, match=match):
        factory()


@pytest.mark.parametrize("lr", [0.0, 1e9])
def test_boundary_values_are_accepted(lr):
    SGD(P, lr=lr, momentum=0.0)
    SGD(P, lr=lr, momentum=0.999999)
    RMSProp(P, lr=lr, rho=0.0, eps=1e-300)
    Adam(P, lr=lr, betas=(0.0, 0.0))
