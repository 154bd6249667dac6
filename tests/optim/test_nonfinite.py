"""A NaN or infinite loss, gradient or step raises NonFiniteError naming the step and quantity, in every optimizer."""

import math

import pytest
import torch
import torch.nn.functional as F

from lightopt.optim import (
    BFGS,
    LBFGS,
    SGD,
    AdaGrad,
    Adam,
    ConjugateGradient,
    NaturalGradient,
    Newton,
    NonFiniteError,
    RMSProp,
)

FIRST_ORDER = {
    "SGD": lambda p, **k: SGD(p, lr=0.1, momentum=0.9, **k),
    "AdaGrad": lambda p, **k: AdaGrad(p, **k),
    "RMSProp": lambda p, **k: RMSProp(p, **k),
    "Adam": lambda p, **k: Adam(p, **k),
}


def _quadratic_steps(opt, w, steps, nan_at=None, closure_step=True, bad="grad"):
    """Minimize |w - 1|²; at step ``nan_at`` (1-based) the gradient (or the loss) turns NaN."""
    for k in range(1, steps + 1):

        def closure():
            opt.zero_grad()
            loss = ((w - 1) ** 2).sum()
            loss.backward()
            if k == nan_at:  # noqa: B023 (the closure runs within its iteration)
                if bad == "grad":
                    w.grad[0] = math.nan
                else:
                    loss = loss * math.nan
            return loss

        if closure_step:
            opt.step(closure)
        else:
            closure()
            opt.step()


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_a_nan_loss_on_the_cpu_is_an_error_at_that_step(name):
    w = torch.nn.Parameter(torch.zeros(3))
    opt = FIRST_ORDER[name]([w])
    with pytest.raises(NonFiniteError, match=rf"{name} step 4: the loss returned by the closure is not finite \(nan\)"):
        _quadratic_steps(opt, w, 10, nan_at=4, bad="loss")


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_strict_checks_stop_before_a_nan_gradient_changes_anything(name):
    w = torch.nn.Parameter(torch.zeros(3))
    opt = FIRST_ORDER[name]([w], check_finite_every=1)
    _quadratic_steps(opt, w, 2)
    before = w.detach().clone()
    with pytest.raises(
        NonFiniteError,
        match=(
            rf"{name} step 3: the gradient of parameter 0 of param group 0, shape \[3\], is not finite "
            r"\(nan in 1 of 3 entries\)\. The parameters were left unchanged"
        ),
    ):
        _quadratic_steps(opt, w, 1, nan_at=1, closure_step=False)
    assert torch.equal(w.detach(), before)


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_default_checks_name_the_steps_a_nan_gradient_hides_in(name):
    # Without a closure the optimizer never sees the loss: the periodic parameter check finds it.
    w = torch.nn.Parameter(torch.zeros(3))
    opt = FIRST_ORDER[name]([w], check_finite_every=5)
    with pytest.raises(
        NonFiniteError,
        match=(
            rf"{name} step 10: parameter 0 of param group 0, shape \[3\], after the update is not finite .*"
            r"A gradient or update of steps 6 to 10 was not finite \(the last check, after step 5, passed\)"
        ),
    ):
        _quadratic_steps(opt, w, 12, nan_at=7, closure_step=False)


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_the_first_step_is_always_checked(name):
    w = torch.nn.Parameter(torch.zeros(3))
    opt = FIRST_ORDER[name]([w])
    with pytest.raises(NonFiniteError, match=rf"{name} step 1: parameter 0 .* of step 1 was not finite"):
        _quadratic_steps(opt, w, 3, nan_at=1, closure_step=False)


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_checks_off_lets_nan_through(name):
    w = torch.nn.Parameter(torch.zeros(3))
    opt = FIRST_ORDER[name]([w], check_finite_every=0)
    _quadratic_steps(opt, w, 5, nan_at=2)
    assert torch.isnan(w.detach()).any()


def test_parameter_names_appear_in_the_message():
    model = torch.nn.Linear(2, 1)
    opt = SGD([{"params": list(model.parameters()), "param_names": ["weight", "bias"]}], lr=0.1, check_finite_every=1)
    model(torch.ones(1, 2)).sum().backward()
    model.bias.grad.fill_(math.inf)
    with pytest.raises(NonFiniteError, match=r"the gradient of parameter 1 \('bias'\) of param group 0, shape \[1\]"):
        opt.step()


# ----------------------------------------------------------------------------- second order


def _relu_classifier(seed):
    torch.manual_seed(seed)
    x = torch.randn(512, 20)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 0.5).long() * 2
    model = torch.nn.Sequential(
        torch.nn.Linear(20, 64), torch.nn.LayerNorm(64), torch.nn.ReLU(), torch.nn.Linear(64, 4)
    )
    return model, x, y


def test_newton_on_a_relu_classifier_raises_instead_of_ending_at_nan():
    # Before: Newton(damping=1.0) with finite-difference Hessian products across the ReLU kinks took
    # ever larger steps and ended at NaN after a few steps, silently.
    model, x, y = _relu_classifier(seed=0)
    opt = Newton(model.parameters(), damping=1.0)
    with pytest.raises(
        NonFiniteError,
        match=r"Newton step \d+: the (loss|gradient|Newton step Δθ|new parameters)"
        r".*raise `damping`",
    ):
        for _ in range(10):
            i = torch.randint(0, 512, (64,))

            def closure():
                loss = F.cross_entropy(model(x[i]), y[i])  # noqa: B023 (the closure runs within its iteration)
                loss.backward()
                return loss

            opt.step(closure)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # left at the last finite point


def _nan_after(threshold):
    """(θ − 3)², plus 0·√(threshold − θ₀): finite for θ₀ < threshold, NaN beyond, where every method's step lands."""
    theta = torch.nn.Parameter(torch.tensor([0.0, 0.0], dtype=torch.float64))

    def loss_fn():
        return ((theta - 3) ** 2).sum() + 0 * torch.sqrt(threshold - theta[0])

    return theta, loss_fn


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda p: Newton(p, solver="exact"), "Newton"),
        (lambda p: ConjugateGradient(p, line_search=None, lr=5.0), "ConjugateGradient"),
        (lambda p: BFGS(p, line_search=None, lr=5.0), "BFGS"),
        (lambda p: LBFGS(p, line_search_fn=None, lr=5.0, max_iter=3), "LBFGS"),
    ],
)
def test_second_order_methods_raise_on_a_nan_loss_and_keep_finite_parameters(make, name):
    theta, loss_fn = _nan_after(1.0)
    opt = make([theta])

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    with pytest.raises(NonFiniteError, match=rf"{name} step \d+: the (loss|gradient|new parameters|search direction)"):
        for _ in range(5):
            opt.step(closure)
    assert torch.isfinite(theta).all()


def test_natural_gradient_raises_on_nan_per_example_losses_before_changing_parameters():
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    opt = NaturalGradient(model.parameters(), lr=0.5)
    opt.step(lambda: F.cross_entropy(model(x), y, reduction="none"))
    before = [p.detach().clone() for p in model.parameters()]
    x_bad = x.clone()
    x_bad[2, 0] = math.nan
    with pytest.raises(
        NonFiniteError, match=r"NaturalGradient step 2: the per-example losses is not finite \(nan in 1 of 8"
    ):
        opt.step(lambda: F.cross_entropy(model(x_bad), y, reduction="none"))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("make", [Newton, ConjugateGradient, BFGS, lambda p: NaturalGradient(p, lr=0.1)])
def test_second_order_methods_refuse_complex_parameters_with_one_clear_error(make):
    z = torch.nn.Parameter(torch.zeros(2, dtype=torch.complex128))
    with pytest.raises(
        TypeError,
        match=r"needs real floating-point parameters, but got one of dtype torch.complex128\. "
        r".*torch.view_as_real.*LBFGS or a first-order optimizer",
    ):
        make([z])
    real = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = make([real])
    with pytest.raises(TypeError, match=r"complex128"):
        opt.add_param_group({"params": [z]})


def test_lbfgs_steps_a_complex_parameter_as_a_pair_of_reals():
    target = torch.tensor([1.0 + 2.0j, -0.5 + 0.25j], dtype=torch.complex128)

    def run(as_real):
        p = torch.nn.Parameter(
            torch.view_as_real(torch.zeros(2, dtype=torch.complex128)).clone()
            if as_real
            else torch.zeros(2, dtype=torch.complex128)
        )
        opt = LBFGS([p], max_iter=5)

        def closure():
            opt.zero_grad()
            x = p if as_real else torch.view_as_real(p)
            loss = (((x - torch.view_as_real(target)) ** 2) * (1 + x**2)).sum()
            loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        return p.detach() if as_real else torch.view_as_real(p.detach())

    torch.testing.assert_close(run(False), run(True), rtol=1e-12, atol=1e-14)
