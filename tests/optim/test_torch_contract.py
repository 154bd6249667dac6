"""torch.optim's contract for lightopt's first-order optimizers: the scenarios torch's own optimizer tests check.

Mirrors torch's test/test_optim.py (TestOptimRenewed) and common_optimizers.py: complex parameters
as pairs of reals, foreach == for-loop == fused, maximize, state dicts (round trips, loading
torch's and older lightopt's), param groups added later, zero-sized parameters, parameters
without gradients, sparse gradients, closures, step hooks, copies, and bad arguments.
"""

import copy
import io
import pickle

import numpy as np
import pytest
import torch

from lightopt.optim import SGD, AdaGrad, Adam, RMSProp

# name -> (lightopt factory, the torch.optim factory that runs the same algorithm at a constant lr, or None)
CASES = {
    "sgd": (lambda p, **k: SGD(p, lr=0.05, **k), lambda p, **k: torch.optim.SGD(p, lr=0.05, **k)),
    "momentum": (
        lambda p, **k: SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01, **k),
        lambda p, **k: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01, **k),
    ),
    "nesterov": (
        lambda p, **k: SGD(p, lr=0.05, momentum=0.9, nesterov=True, **k),
        lambda p, **k: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, **k),
    ),
    "adagrad": (lambda p, **k: AdaGrad(p, lr=0.1, eps=1e-10, **k), lambda p, **k: torch.optim.Adagrad(p, lr=0.1, **k)),
    "rmsprop": (
        lambda p, **k: RMSProp(p, lr=0.01, rho=0.99, eps=1e-8, eps_in_sqrt=False, **k),
        lambda p, **k: torch.optim.RMSprop(p, lr=0.01, **k),
    ),
    "rmsprop-momentum": (
        lambda p, **k: RMSProp(p, lr=0.01, rho=0.99, eps=1e-8, eps_in_sqrt=False, momentum=0.5, **k),
        lambda p, **k: torch.optim.RMSprop(p, lr=0.01, momentum=0.5, **k),
    ),
    "rmsprop-book": (lambda p, **k: RMSProp(p, lr=0.01, **k), None),
    "rmsprop-nesterov": (lambda p, **k: RMSProp(p, lr=0.01, momentum=0.5, nesterov=True, **k), None),
    "adam": (
        lambda p, **k: Adam(p, lr=0.01, weight_decay=0.01, **k),
        lambda p, **k: torch.optim.Adam(p, lr=0.01, weight_decay=0.01, **k),
    ),
}
TORCH_CASES = [name for name, (_, theirs) in CASES.items() if theirs is not None]
# The kernel paths each optimizer offers (torch has no fused RMSprop).
PATHS = {name: ("loop", "foreach") if name.startswith("rmsprop") else ("loop", "foreach", "fused") for name in CASES}
PATH_KWARGS = {"loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True), "default": {}}

_rng = np.random.default_rng(1)
_A = torch.from_numpy(_rng.normal(size=(5, 5)) / 3)
_B = torch.from_numpy(_rng.normal(size=5))


def make_params(dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 5, generator=gen, dtype=torch.float64).to(dtype)
    b = torch.randn(5, generator=gen, dtype=torch.float64).to(dtype)
    return [torch.nn.Parameter(w), torch.nn.Parameter(b)]


def objective(params, sign=1.0):
    """A smooth, bounded-below loss of a 3x5 weight and a 5-vector (real or complex)."""
    w, b = params
    if w.is_complex():
        w, b = torch.view_as_real(w).reshape(3, -1)[:, :5], torch.view_as_real(b).reshape(-1)[:5]
    a, v = _A.to(w.dtype), _B.to(w.dtype)
    h = torch.tanh(w @ a + b)
    return sign * ((h - v) ** 2).sum() + 0.01 * sign * ((w**2).sum() + (b**4).sum())


def trajectory(opt, params, steps=25, sign=1.0, closure_step=True, on_step=None):
    def closure():
        opt.zero_grad()
        loss = objective(params, sign)
        loss.backward()
        return loss

    out = []
    for k in range(steps):
        if on_step is not None:
            on_step(k, opt)
        if closure_step:
            opt.step(closure)
        else:
            closure()
            opt.step()
        out.append(torch.cat([p.detach().reshape(-1) for p in params]).clone())
    return torch.stack(out)


# ----------------------------------------------------------------------------- complex parameters


def complex_run(make, as_real, steps=20, **kwargs):
    """Step complex parameters, or their view_as_real twins, on the same real objective of the real parts."""
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, 3, dtype=torch.complex128, generator=gen)
    param = torch.nn.Parameter(torch.view_as_real(z).clone() if as_real else z.clone())
    opt = make([param], **kwargs)
    target = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(4, 3, 2)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        x = param if as_real else torch.view_as_real(param)
        (((x - target) ** 2) * (1 + x**2)).sum().backward()
        opt.step()
        out.append((param.detach() if as_real else torch.view_as_real(param.detach())).clone())
    return torch.stack(out)


@pytest.mark.parametrize("path", ["default", "loop", "foreach"])
@pytest.mark.parametrize("name", CASES)
def test_complex_parameter_steps_as_a_pair_of_reals(name, path):
    make = CASES[name][0]
    as_complex = complex_run(make, as_real=False, **PATH_KWARGS[path])
    as_real = (
        complex_run(make, as_real=True, foreach=path == "foreach")
        if path != "default"
        else complex_run(make, as_real=True)
    )
    torch.testing.assert_close(as_complex, as_real, rtol=1e-12, atol=1e-14)


def test_rmsprop_complex_square_average_stays_real_and_nonnegative():
    # Before: r ← ρr + (1 − ρ)g·g squared the complex number, so r went negative (-0.1+0j) and the
    # step went the wrong way.
    p = torch.nn.Parameter(torch.tensor([1j], dtype=torch.complex128))
    opt = RMSProp([p], lr=0.01)
    p.grad = torch.tensor([1j], dtype=torch.complex128)
    opt.step()
    r = opt.state[p]["square_avg"]
    # (re², im²) averaged separately, as torch's RMSprop does: both >= 0
    torch.testing.assert_close(torch.view_as_real(r), torch.tensor([[0.0, 0.1]], dtype=torch.float64))
    assert p.detach().imag.item() < 1.0  # the step descends along the gradient's direction


@pytest.mark.parametrize("name", ["rmsprop", "rmsprop-momentum", "adagrad", "adam", "momentum"])
def test_complex_parameters_follow_torch(name):
    ours, theirs = CASES[name]
    torch.testing.assert_close(complex_run(ours, False), complex_run(theirs, False), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- kernel paths


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("name", CASES)
def test_foreach_fused_and_default_paths_equal_the_for_loop(name, dtype, rtol):
    loop_params = make_params(dtype)
    loop = trajectory(CASES[name][0](loop_params, foreach=False), loop_params)
    for path in (*PATHS[name][1:], "default"):
        params = make_params(dtype)
        other = trajectory(CASES[name][0](params, **PATH_KWARGS[path]), params)
        torch.testing.assert_close(other, loop, rtol=rtol, atol=rtol * 1e-2, msg=f"{name}: {path} vs loop")


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: SGD(p, lr=0.1, momentum=0.9), "fused"),
        (lambda p: Adam(p), "fused"),
        (lambda p: AdaGrad(p), "fused"),
        (lambda p: SGD(p, lr=0.1, foreach=False), "loop"),
        (lambda p: SGD(p, lr=0.1, foreach=True), "foreach"),
        (lambda p: Adam(p, fused=False), "foreach"),
        (lambda p: Adam(p, foreach=False), "loop"),
    ],
)
def test_default_path_is_fused_on_cpu_floats_and_explicit_arguments_win(make, expected):
    params = make_params()
    opt = make(params)
    assert opt._paths.path(opt.param_groups[0]) == expected


def test_default_path_falls_back_to_foreach_for_complex_and_loop_for_sparse():
    z = [torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))]
    opt = SGD(z, lr=0.1)
    assert opt._paths.path(opt.param_groups[0]) == "foreach"
    assert opt._paths.path(opt.param_groups[0], has_sparse_grad=True) == "loop"


def test_default_path_leaves_the_groups_arguments_unset():
    params = make_params()
    opt = Adam(params)
    trajectory(opt, params, steps=2)
    assert opt.param_groups[0]["foreach"] is None and opt.param_groups[0]["fused"] is None
    assert opt.state_dict()["param_groups"][0]["fused"] is None


# ----------------------------------------------------------------------------- maximize


@pytest.mark.parametrize("name", CASES)
def test_maximize_ascends_exactly_as_minimizing_the_negative(name):
    p1, p2 = make_params(), make_params()
    up = trajectory(CASES[name][0](p1, maximize=True), p1, sign=-1.0)
    down = trajectory(CASES[name][0](p2), p2)
    torch.testing.assert_close(up, down, rtol=0, atol=0)


@pytest.mark.parametrize("name", TORCH_CASES)
def test_maximize_matches_torch(name):
    ours, theirs = CASES[name]
    p1, p2 = make_params(), make_params()
    torch.testing.assert_close(
        trajectory(ours(p1, maximize=True), p1, sign=-1.0),
        trajectory(theirs(p2, maximize=True), p2, sign=-1.0),
        rtol=1e-12,
        atol=1e-14,
    )


# ----------------------------------------------------------------------------- state dicts


def _reload(opt, make, params):
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    fresh = make(params)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


@pytest.mark.parametrize("name", TORCH_CASES)
def test_state_dict_saved_by_torch_loads_and_continues_as_torch(name):
    ours, theirs = CASES[name]
    params = make_params()
    torch_opt = theirs(params)
    trajectory(torch_opt, params, steps=10)
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    # The lightopt optimizer is built with other hyperparameters: the loaded groups replace them, as in torch.
    loaded = _reload(torch_opt, lambda p: type(ours(make_params()))(p, lr=0.5), twins)
    theirs_rest = trajectory(torch_opt, params, steps=15)
    ours_rest = trajectory(loaded, twins, steps=15)
    torch.testing.assert_close(ours_rest, theirs_rest, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["momentum", "nesterov"])
def test_torch_sgd_buffer_becomes_the_books_velocity(name):
    _ours, theirs = CASES[name]
    params = make_params()
    torch_opt = theirs(params)
    trajectory(torch_opt, params, steps=5)
    loaded = _reload(torch_opt, lambda p: SGD(p, lr=0.5, momentum=0.1), params)
    for p in params:
        torch.testing.assert_close(loaded.velocity(p), -0.05 * torch_opt.state[p]["momentum_buffer"])


def test_torch_rmsprop_momentum_buffer_becomes_the_velocity():
    _ours, theirs = CASES["rmsprop-momentum"]
    params = make_params()
    torch_opt = theirs(params)
    trajectory(torch_opt, params, steps=5)
    loaded = _reload(torch_opt, lambda p: RMSProp(p), params)
    group = loaded.param_groups[0]
    assert group["rho"] == 0.99 and group["eps_in_sqrt"] is False and "alpha" not in group
    for p in params:
        state = loaded.state[p]
        assert state["step"] == 5 and "momentum_buffer" not in state
        torch.testing.assert_close(state["velocity"], -0.01 * torch_opt.state[p]["momentum_buffer"])


@pytest.mark.parametrize(
    "theirs, ours, match",
    [
        (
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.5),
            lambda p: SGD(p, lr=0.1),
            r"SGD \(Algorithms 8.1-8.3\) has no `dampening`: it must be 0, but got dampening=0.5\. .*scale `lr`",
        ),
        (lambda p: torch.optim.Adam(p, amsgrad=True), Adam, r"has no `amsgrad`.*torch.optim.Adam\(amsgrad=True\)"),
        (lambda p: torch.optim.Adam(p, decoupled_weight_decay=True), Adam, r"`decoupled_weight_decay`.*AdamW"),
        (lambda p: torch.optim.RMSprop(p, centered=True), RMSProp, r"has no `centered`.*RMSprop\(centered=True\)"),
        (lambda p: torch.optim.Adagrad(p, lr_decay=0.1), AdaGrad, r"has no `lr_decay`.*LambdaLR"),
    ],
)
def test_torch_state_dict_with_an_option_the_book_lacks_is_refused(theirs, ours, match):
    params = make_params()
    torch_opt = theirs(params)
    trajectory(torch_opt, params, steps=2)
    opt = ours(params)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(torch_opt.state_dict())


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop-book", "rmsprop-nesterov"])
def test_state_dict_of_an_earlier_lightopt_without_foreach_fused_maximize_loads(name):
    make = CASES[name][0]
    p_full = make_params()
    uninterrupted = trajectory(make(p_full), p_full, steps=20)

    params = make_params()
    opt = make(params)
    first = trajectory(opt, params, steps=8)
    old = opt.state_dict()
    for group in old["param_groups"]:  # the format of lightopt 0.1 before these keys existed
        for key in ("foreach", "fused", "maximize", "eps_in_sqrt"):
            group.pop(key, None)
    fresh = make(params)
    fresh.load_state_dict(old)
    assert fresh.param_groups[0]["foreach"] is None
    rest = trajectory(fresh, params, steps=12)
    torch.testing.assert_close(torch.cat([first, rest]), uninterrupted, rtol=0, atol=0)


@pytest.mark.parametrize("name", CASES)
def test_state_dict_round_trip_is_deterministic_and_continues_exactly(name):
    make = CASES[name][0]
    p_full = make_params()
    uninterrupted = trajectory(make(p_full), p_full, steps=20)
    params = make_params()
    opt = make(params)
    first = trajectory(opt, params, steps=8)
    saved = copy.deepcopy(opt.state_dict())
    fresh = _reload(opt, make, params)
    assert fresh.state_dict()["param_groups"] == saved["param_groups"]
    rest = trajectory(fresh, params, steps=12)
    torch.testing.assert_close(torch.cat([first, rest]), uninterrupted, rtol=0, atol=0)


@pytest.mark.parametrize("name", CASES)
def test_deepcopy_and_pickle_keep_hyperparameters_and_continue_identically(name):
    params = make_params()
    opt = CASES[name][0](params, check_finite_every=7)
    trajectory(opt, params, steps=3)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.check_finite_every == 7
        assert clone.param_groups[0].keys() == opt.param_groups[0].keys()
    twin_opt = copy.deepcopy(opt)
    twin_params = [p for g in twin_opt.param_groups for p in g["params"]]
    torch.testing.assert_close(trajectory(twin_opt, twin_params, steps=5), trajectory(opt, params, steps=5))


# ----------------------------------------------------------------------------- param groups, odd parameters


@pytest.mark.parametrize("name", CASES)
def test_param_group_added_later_is_optimized_with_the_defaults(name):
    make = CASES[name][0]
    w, extra = (
        torch.nn.Parameter(torch.ones(3, dtype=torch.float64)),
        torch.nn.Parameter(torch.ones(2, dtype=torch.float64)),
    )
    opt = make([w])
    for k in range(6):
        if k == 3:
            opt.add_param_group({"params": [extra]})
        opt.zero_grad()
        ((w - 2) ** 2).sum().add(((extra + 1) ** 2).sum()).backward()
        opt.step()
    assert not torch.equal(extra.detach(), torch.ones(2, dtype=torch.float64))
    assert opt.param_groups[1].keys() == opt.param_groups[0].keys()
    assert opt.param_groups[1]["lr"] == opt.param_groups[0]["lr"]
    with pytest.raises(ValueError, match=r"`lr` must be >= 0, but got lr=-1.0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "lr": -1.0})
    assert len(opt.param_groups) == 2


@pytest.mark.parametrize("path", ["default", "loop", "foreach", "fused"])
@pytest.mark.parametrize("name", CASES)
def test_zero_sized_parameters_are_stepped_with_the_others(name, path):
    if path not in (*PATHS[name], "default"):
        pytest.skip(f"{name} has no {path} path")
    empty = torch.nn.Parameter(torch.zeros(0, 3, dtype=torch.float64))
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = CASES[name][0]([empty, w], check_finite_every=1, **PATH_KWARGS[path])
    for _ in range(3):
        opt.zero_grad()
        (((w - 2) ** 2).sum() + empty.sum()).backward()
        opt.step()
    assert empty.shape == (0, 3) and bool((w < 2).all() and (w > 1).all())


@pytest.mark.parametrize("name", CASES)
def test_step_is_a_no_op_for_parameters_without_gradients(name):
    params = make_params()
    before = [p.detach().clone() for p in params]
    opt = CASES[name][0](params)
    state_before = copy.deepcopy(opt.state_dict()["state"])  # AdaGrad, as torch's, creates its state up front
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, before))
    state_after = opt.state_dict()["state"]
    assert state_after.keys() == state_before.keys()
    for key, entries in state_before.items():
        assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(state_after[key][k])) for k, v in entries.items())


@pytest.mark.parametrize(
    "make, theirs",
    [
        (lambda p: SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        (lambda p: SGD(p, lr=0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
        (lambda p: AdaGrad(p, lr=0.1, eps=1e-10), lambda p: torch.optim.Adagrad(p, lr=0.1)),
    ],
)
def test_sparse_gradients_follow_torch(make, theirs):
    def run(factory):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 3, sparse=True).double()
        opt = factory(emb.parameters())
        for k in range(6):
            opt.zero_grad()
            emb(torch.tensor([k % 4, 7])).pow(2).sum().backward()
            assert emb.weight.grad.is_sparse
            opt.step()
        return emb.weight.detach()

    torch.testing.assert_close(run(make), run(theirs), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [RMSProp, Adam])
def test_sparse_gradients_are_a_clear_error_where_torch_has_none_either(make):
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = make(emb.parameters())
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(TypeError, match=r"does not support sparse gradients.*SGD or AdaGrad"):
        opt.step()


# ----------------------------------------------------------------------------- closures and hooks


@pytest.mark.parametrize("name", CASES)
def test_step_returns_the_closures_loss_and_calls_it_once_with_grad_enabled(name):
    params = make_params()
    opt = CASES[name][0](params)
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = objective(params)
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert calls == [True]
    assert isinstance(loss, torch.Tensor) and loss.requires_grad


@pytest.mark.parametrize("name", CASES)
def test_step_hooks_run_once_per_step(name):
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # torch wraps its classes' step on first use
    torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))])
    params = make_params()
    opt = CASES[name][0](params)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append("post"))
    trajectory(opt, params, steps=2)
    assert seen == ["pre", "post", "pre", "post"]


def test_sgd_takes_its_learning_rate_from_the_param_groups():
    w, b = make_params()
    opt = SGD([{"params": [w], "lr": 0.1}, {"params": [b], "lr": 0.01}], momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert opt.defaults["lr"] is None
    trajectory(opt, [w, b], steps=2)
    with pytest.raises(ValueError, match=r"`lr` is required: pass SGD\(params, lr=\.\.\.\), or give every param group"):
        SGD([{"params": [w], "lr": 0.1}, {"params": [b]}])
    with pytest.raises(ValueError, match=r"`lr` is required"):
        SGD([w])


# ----------------------------------------------------------------------------- bad arguments

P = [torch.nn.Parameter(torch.zeros(1))]


@pytest.mark.parametrize(
    "factory, exception, match",
    [
        (
            lambda: SGD(P, lr=0.1, dampening=0.1),
            ValueError,
            r"has no `dampening`: it must be 0, but got dampening=0.1\. .*\(1 - dampening\)",
        ),
        (lambda: SGD(P, lr=0.1, differentiable=True), ValueError, r"has no `differentiable`.*torch.optim class"),
        (lambda: SGD(P, lr=torch.tensor(0.1)), TypeError, r"`lr` must be a real number, but got a tensor.*float\(lr\)"),
        (lambda: Adam(P, lr=torch.tensor(0.1)), TypeError, r"`lr` must be a real number, but got a tensor"),
        (lambda: SGD(P, lr=0.1, maximize="yes"), TypeError, r"`maximize` must be True or False"),
        (lambda: SGD(P, lr=0.1, check_finite_every=-1), ValueError, r"`check_finite_every` must be an integer >= 0"),
        (lambda: SGD(P, lr=0.1, check_finite_every=1.5), TypeError, r"`check_finite_every` must be an integer"),
        (lambda: SGD([{"params": P, "dampening": 0.2}], lr=0.1), ValueError, r"dampening=0.2"),
        (lambda: Adam(P, amsgrad=True), ValueError, r"Adam \(Algorithm 8.7\) has no `amsgrad`.*amsgrad=True\)"),
        (lambda: Adam(P, decoupled_weight_decay=True), ValueError, r"AdamW"),
        (lambda: Adam(P, differentiable=True), ValueError, r"has no `differentiable`"),
        (lambda: Adam(P, foreach=True, fused=True), ValueError, r"cannot both be True"),
        (lambda: Adam(P, maximize=1), TypeError, r"`maximize` must be True or False"),
        (lambda: AdaGrad(P, lr_decay=0.01), ValueError, r"has no `lr_decay`.*LambdaLR"),
        (
            lambda: AdaGrad(P, initial_accumulator_value=-1.0),
            ValueError,
            r"`initial_accumulator_value` must be >= 0, but got initial_accumulator_value=-1.0",
        ),
        (lambda: AdaGrad(P, differentiable=True), ValueError, r"has no `differentiable`"),
        (lambda: RMSProp(P, centered=True), ValueError, r"has no `centered`.*RMSprop\(centered=True\)"),
        (lambda: RMSProp(P, capturable=True), ValueError, r"has no `capturable`"),
        (lambda: RMSProp(P, differentiable=True), ValueError, r"has no `differentiable`"),
        (lambda: RMSProp(P, eps_in_sqrt=0), TypeError, r"`eps_in_sqrt` must be True or False"),
        (lambda: RMSProp([{"params": P, "centered": True}]), ValueError, r"has no `centered`"),
    ],
)
def test_bad_arguments(factory, exception, match):
    with pytest.raises(exception, match=match):
        factory()


def test_initial_accumulator_value_is_supported_as_in_torch():
    p1, p2 = make_params(), make_params()
    ours = trajectory(AdaGrad(p1, lr=0.1, eps=1e-10, initial_accumulator_value=0.5), p1)
    theirs = trajectory(torch.optim.Adagrad(p2, lr=0.1, initial_accumulator_value=0.5), p2)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
