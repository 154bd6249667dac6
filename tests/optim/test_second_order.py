"""lightopt's second-order optimizers (§8.6) against naive float64 transcriptions of the book, and in Lightning."""

import io
import itertools
import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightopt.optim import BFGS, LBFGS, ConjugateGradient, NaturalGradient, Newton
from lightopt.optim import _second_order as _so
from lightopt.optim.natural_gradient import fisher_vector_product, per_example_gradients
from tests.reference import second_order as ref

pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")

_rng = np.random.default_rng(0)
_Q, _ = np.linalg.qr(_rng.normal(size=(6, 6)))
A = _Q @ np.diag([0.5, 1.0, 2.0, 3.0, 5.0, 8.0]) @ _Q.T
B = _rng.normal(size=6)
THETA0 = _rng.normal(size=6)
THETA_STAR = np.linalg.solve(A, B)


def quartic_grad(theta):
    return A @ theta - B + 0.1 * theta**3


def quartic_hess(theta):
    return A + np.diag(0.3 * theta**2)


class Problem:
    """θ split over two param groups (a 2x2 weight and a vector); J = ½θᵀAθ − bᵀθ (+ 0.025·Σθ⁴)."""

    def __init__(
        self, make_optimizer, quartic=False, create_graph=False, dtype=torch.float64, theta0=THETA0, groups=True
    ):
        self.w1 = torch.nn.Parameter(torch.tensor(theta0[:4], dtype=dtype).reshape(2, 2))
        self.w2 = torch.nn.Parameter(torch.tensor(theta0[4:], dtype=dtype))
        self.opt = make_optimizer([{"params": [self.w1]}, {"params": [self.w2]}] if groups else [self.w1, self.w2])
        self.quartic, self.create_graph, self.calls = quartic, create_graph, 0

    @property
    def theta(self):
        return torch.cat([self.w1.detach().reshape(-1), self.w2.detach()]).double().numpy()

    def loss(self):
        theta = torch.cat([self.w1.reshape(-1), self.w2])
        a, b = torch.from_numpy(A).to(theta.dtype), torch.from_numpy(B).to(theta.dtype)
        loss = 0.5 * theta @ a @ theta - b @ theta
        return loss + 0.025 * (theta**4).sum() if self.quartic else loss

    def closure(self):
        self.calls += 1
        self.opt.zero_grad()
        loss = self.loss()
        loss.backward(create_graph=self.create_graph)
        return loss

    def run(self, steps, on_step=lambda k, opt: None):
        out = []
        for k in range(steps):
            on_step(k, self.opt)
            self.opt.step(self.closure)
            out.append(self.theta)
        return out


def set_lr(value, at):
    def on_step(k, opt):
        if k == at:
            for group in opt.param_groups:
                group["lr"] = value

    return on_step


# ----------------------------------------------------------------------------- logistic regression

_X = torch.randn(200, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
_LOGITS = _X @ torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64) + 0.3
_Y = (
    torch.rand(200, generator=torch.Generator().manual_seed(2), dtype=torch.float64) < torch.sigmoid(_LOGITS)
).double()


def logistic(make_optimizer, dtype=torch.float64, create_graph=False):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).to(dtype)
    x, y = _X.to(dtype), _Y.to(dtype)
    opt = make_optimizer(model.parameters())

    def loss_fn():
        return F.binary_cross_entropy_with_logits(model(x).squeeze(1), y)

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward(create_graph=create_graph)
        return loss

    def grad_norm():
        model.zero_grad()
        loss_fn().backward()
        return float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm())

    return model, opt, closure, loss_fn, grad_norm


# ----------------------------------------------------------------------------- shared helpers


def test_linear_cg_solves_indefinite_systems_and_stops_at_max_iter():
    h = torch.diag(torch.tensor([2.0, -2.0, 5.0], dtype=torch.float64))
    b = torch.tensor([2.0, -1.0, 1.0], dtype=torch.float64)
    x, products = _so.conjugate_gradient(lambda v: h @ v, b, max_iter=10, tol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(h, b), rtol=0, atol=1e-12)
    assert products == 3
    _, products = _so.conjugate_gradient(lambda v: h @ v, b, max_iter=1, tol=0.0)
    assert products == 1


def test_finite_difference_and_graph_hvps_agree_with_the_hessian():
    theta = torch.nn.Parameter(torch.tensor(THETA0, dtype=torch.float64))
    a = torch.from_numpy(A)

    def closure(create_graph=False):
        loss = 0.5 * theta @ a @ theta + 0.025 * (theta**4).sum()
        loss.backward(create_graph=create_graph)
        return loss

    v = torch.linspace(-1, 1, 6, dtype=torch.float64)
    expected = torch.from_numpy(quartic_hess(THETA0)) @ v
    fd = _so.finite_difference_hvp(closure, [theta], theta.detach().clone())(v)
    torch.testing.assert_close(fd, expected, rtol=1e-8, atol=1e-8)
    assert torch.equal(theta.detach(), torch.tensor(THETA0))  # the parameters are restored
    _so.evaluate(lambda: closure(create_graph=True), [theta])
    torch.testing.assert_close(_so.graph_hvp([theta])(v), expected, rtol=1e-13, atol=1e-13)


# ----------------------------------------------------------------------------- Newton


@pytest.mark.parametrize("create_graph", [False, True], ids=["finite-difference", "create_graph"])
@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_newton_minimizes_a_quadratic_in_one_step(solver, create_graph):
    problem = Problem(lambda p: Newton(p, solver=solver, cg_tol=1e-12), create_graph=create_graph)
    (theta,) = problem.run(1)
    np.testing.assert_allclose(theta, THETA_STAR, rtol=0, atol=1e-12 if create_graph else 1e-8)


@pytest.mark.parametrize("create_graph", [False, True], ids=["finite-difference", "create_graph"])
def test_newton_jumps_to_the_saddle_of_x2_minus_y2(create_graph):
    theta = torch.nn.Parameter(torch.tensor([1.0, 0.5], dtype=torch.float64))
    opt = Newton([theta])

    def closure():
        loss = theta[0] ** 2 - theta[1] ** 2
        loss.backward(create_graph=create_graph)
        return loss

    opt.step(closure)
    if create_graph:
        assert torch.equal(theta.detach(), torch.zeros(2, dtype=torch.float64))
    else:
        torch.testing.assert_close(theta.detach(), torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-9)


def test_newton_line_search_falls_back_to_steepest_descent_on_an_ascent_direction():
    theta = torch.nn.Parameter(torch.tensor([0.1, 0.5], dtype=torch.float64))
    opt = Newton([theta], line_search="strong_wolfe")

    def closure():  # x² − y² + y⁴/4: the Newton step from here heads for the saddle, uphill in y
        loss = theta[0] ** 2 - theta[1] ** 2 + 0.25 * theta[1] ** 4
        loss.backward()
        return loss

    before = float(closure().detach())
    opt.step(closure)
    assert opt.state[theta]["descent_fallbacks"] == 1
    assert float(closure().detach()) < before


@pytest.mark.parametrize("create_graph", [False, True], ids=["finite-difference", "create_graph"])
@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_newton_with_damping_matches_the_transcription(solver, create_graph):
    """Two param groups, a damping and an lr that change mid-run, on a non-quadratic J."""

    def on_step(k, opt):
        for group in opt.param_groups:
            group["damping"], group["lr"] = (0.5, 1.0) if k < 3 else (0.1, 0.7)

    problem = Problem(lambda p: Newton(p, solver=solver, cg_tol=1e-13), quartic=True, create_graph=create_graph)
    ours = problem.run(6, on_step)
    expected = ref.newton(
        THETA0,
        quartic_grad,
        quartic_hess,
        6,
        damping=lambda k: 0.5 if k < 3 else 0.1,
        lr=lambda k: 1.0 if k < 3 else 0.7,
    )
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-11 if create_graph else 1e-7)


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_newton_converges_on_logistic_regression(line_search):
    _, opt, closure, _, grad_norm = logistic(lambda p: Newton(p, line_search=line_search), create_graph=True)
    for _ in range(8):
        opt.step(closure)
    assert grad_norm() < 1e-6


def test_newton_descends_in_float32_with_finite_differences():
    _, opt, closure, loss_fn, _ = logistic(lambda p: Newton(p, damping=1e-3), dtype=torch.float32)
    before = float(loss_fn().detach())
    for _ in range(3):
        opt.step(closure)
    assert float(loss_fn().detach()) < before - 0.05


# ----------------------------------------------------------------------------- conjugate gradient


@pytest.mark.parametrize("beta", ["polak_ribiere", "fletcher_reeves"])
def test_cg_follows_the_exact_line_search_iterates_and_ends_at_theta_star_in_k_steps(beta):
    problem = Problem(lambda p: ConjugateGradient(p, beta=beta, c1=1e-10, c2=1e-7, tolerance_grad=0.0))
    ours = problem.run(6)
    expected = ref.conjugate_gradient_quadratic(THETA0, A, B, 6, beta=beta)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours[-1], THETA_STAR, rtol=0, atol=1e-9)


def test_cg_restarts_match_the_transcription_and_max_iter_runs_iterations_within_one_step():
    problem = Problem(lambda p: ConjugateGradient(p, restart_every=2, max_iter=4, c1=1e-10, c2=1e-7))
    ours = problem.run(2)  # 8 iterations
    expected = ref.conjugate_gradient_quadratic(THETA0, A, B, 8, restart_every=2)
    np.testing.assert_allclose(ours, [expected[3], expected[7]], rtol=0, atol=1e-9)
    assert problem.opt.state[problem.w1]["n_iter"] == 8
    # With restarts every 2 iterations the quadratic is not solved in 6: this is not plain CG.
    plain = ref.conjugate_gradient_quadratic(THETA0, A, B, 6)
    assert np.abs(expected[5] - plain[5]).max() > 1e-3


def test_cg_without_line_search_takes_the_fixed_step_lr():
    problem = Problem(lambda p: ConjugateGradient(p, lr=0.05, line_search=None))
    (theta,) = problem.run(1)
    np.testing.assert_allclose(theta, THETA0 - 0.05 * (A @ THETA0 - B), rtol=0, atol=1e-14)


@pytest.mark.parametrize("beta", ["polak_ribiere", "fletcher_reeves"])
def test_cg_converges_on_logistic_regression(beta):
    _, opt, closure, _, grad_norm = logistic(
        lambda p: ConjugateGradient(p, beta=beta, max_iter=50, tolerance_grad=1e-10)
    )
    for _ in range(2):
        opt.step(closure)
    assert grad_norm() < 1e-6


# ----------------------------------------------------------------------------- BFGS


def test_bfgs_matches_the_transcription_with_the_same_step_sizes():
    """Fixed steps (no line search), two groups, lr changed mid-run, on a non-quadratic J."""
    steps, lr0, lr1 = 12, 0.3, 0.6
    matrices = []

    def on_step(k, opt):
        set_lr(lr1, at=6)(k, opt)

    problem = Problem(lambda p: BFGS(p, lr=lr0, line_search=None, init_scale=False), quartic=True)
    ours = []
    for k in range(steps):
        on_step(k, problem.opt)
        problem.opt.step(problem.closure)
        ours.append(problem.theta)
        matrices.append(problem.opt.state[problem.w1]["inverse_hessian"].clone().numpy())
    expected, expected_m = ref.bfgs(THETA0, quartic_grad, [lr0] * 6 + [lr1] * 6)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(matrices, expected_m, rtol=0, atol=1e-10)
    assert problem.opt.state[problem.w1]["updates"] == steps - 1


def test_bfgs_initial_scaling_matches_the_transcription():
    problem = Problem(lambda p: BFGS(p, lr=0.3, line_search=None, init_scale=True), quartic=True)
    ours = problem.run(5)
    expected, _ = ref.bfgs(THETA0, quartic_grad, [0.3] * 5, init_scale=True)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)


def test_bfgs_skips_updates_that_break_the_curvature_condition():
    problem = Problem(lambda p: BFGS(p, lr=0.3, line_search=None))
    problem.opt.step(problem.closure)
    state = problem.opt.state[problem.w1]
    state["prev_grad"] = state["prev_grad"] + 10.0 * (torch.from_numpy(problem.theta) - state["prev_params"])
    problem.opt.step(problem.closure)  # y = g − g_prev now points against s: yᵀs < 0
    assert state["skipped_updates"] == 1 and "updates" not in state


def test_bfgs_minimizes_a_quadratic_and_logistic_regression():
    problem = Problem(lambda p: BFGS(p, max_iter=30, tolerance_grad=1e-12))
    (theta,) = problem.run(1)
    # A line search that compares losses stops near sqrt(machine epsilon): J changes by ~|g|^2, which
    # float64 no longer resolves next to J ~ 1 once |g| ~ 1e-8; θ is then within ~cond(A)·1e-8 / 8.
    np.testing.assert_allclose(theta, THETA_STAR, rtol=0, atol=1e-7)
    _, opt, closure, _, grad_norm = logistic(lambda p: BFGS(p, max_iter=40, tolerance_grad=1e-10))
    opt.step(closure)
    assert grad_norm() < 1e-6


def test_bfgs_refuses_models_above_max_params():
    with pytest.raises(ValueError, match=r"max_params=5, but got n=6\..*LBFGS"):
        BFGS([torch.nn.Parameter(torch.zeros(6))], max_params=5)
    BFGS([torch.nn.Parameter(torch.zeros(6))], max_params=6)


# ----------------------------------------------------------------------------- L-BFGS


def test_lbfgs_one_step_minimizes_a_small_quadratic():
    problem = Problem(lambda p: LBFGS(p, tolerance_change=1e-14), groups=False)
    problem.opt.step(problem.closure)
    assert np.abs(A @ problem.theta - B).max() < 1e-7
    assert problem.opt.defaults["line_search_fn"] == "strong_wolfe"


def test_lbfgs_is_torchs_algorithm():
    mine = Problem(lambda p: LBFGS(p, max_iter=5), quartic=True, groups=False)
    theirs = Problem(
        lambda p: torch.optim.LBFGS(p, max_iter=5, line_search_fn="strong_wolfe"), quartic=True, groups=False
    )
    np.testing.assert_array_equal(mine.run(3), theirs.run(3))


# ----------------------------------------------------------------------------- natural gradient


def _natural_setup(lr=1.0, damping=0.1, groups=False):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    params = [{"params": [model.weight]}, {"params": [model.bias]}] if groups else model.parameters()
    opt = NaturalGradient(params, lr=lr, damping=damping, cg_tol=1e-14)

    def closure():
        return F.binary_cross_entropy_with_logits(model(_X[:40]).squeeze(1), _Y[:40], reduction="none")

    return model, opt, closure


def test_fisher_vector_product_equals_the_explicit_fisher_matrix():
    model, _, closure = _natural_setup()
    params = list(model.parameters())
    big_g = per_example_gradients(closure(), params)
    assert big_g.shape == (40, 4)
    rows = []
    for i in range(40):  # one backward per example
        grads = torch.autograd.grad(closure()[i], params)
        rows.append(torch.cat([gr.reshape(-1) for gr in grads]))
    explicit_g = torch.stack(rows)
    torch.testing.assert_close(big_g, explicit_g, rtol=1e-12, atol=1e-14)
    v = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(
        fisher_vector_product(big_g, v), explicit_g.T @ explicit_g @ v / 40, rtol=1e-12, atol=1e-14
    )


def test_natural_gradient_step_solves_the_damped_fisher_system():
    model, opt, closure = _natural_setup(lr=0.5, damping=0.1, groups=True)
    before = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    big_g = per_example_gradients(closure(), list(model.parameters()))
    fisher = big_g.T @ big_g / 40
    d = torch.linalg.solve(fisher + 0.1 * torch.eye(4, dtype=torch.float64), big_g.mean(0))
    opt.step(closure)
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(after, before - 0.5 * d, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.bias.grad, big_g.mean(0)[3:], rtol=0, atol=1e-14)


def test_natural_gradient_decreases_the_logistic_loss():
    _, opt, closure = _natural_setup(lr=0.5, damping=1e-2)
    losses = [float(opt.step(closure)) for _ in range(10)]
    assert losses[-1] < losses[0] - 0.05
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(losses))


def test_natural_gradient_explains_a_scalar_closure():
    _model, opt, closure = _natural_setup()
    with pytest.raises(
        ValueError, match=r"per-example losses, a 1-D tensor of shape \[m\].*returned a tensor of shape \[\]"
    ):
        opt.step(lambda: closure().mean())
    with pytest.raises(TypeError, match="returned float"):
        opt.step(lambda: 1.0)


# ----------------------------------------------------------------------------- resume


RESUMABLE = {
    "Newton": lambda p: Newton(p, damping=0.3, line_search="strong_wolfe"),
    "ConjugateGradient": lambda p: ConjugateGradient(p, beta="fletcher_reeves", restart_every=3),
    "BFGS": lambda p: BFGS(p),
    "BFGS-fixed-step": lambda p: BFGS(p, lr=0.3, line_search=None),
}


@pytest.mark.parametrize("name", RESUMABLE)
def test_state_dict_round_trip_mid_run_equals_an_uninterrupted_run(name):
    make = RESUMABLE[name]
    uninterrupted = Problem(make, quartic=True).run(8)[-1]
    first = Problem(make, quartic=True)
    first.run(4)
    buffer = io.BytesIO()
    torch.save(first.opt.state_dict(), buffer)
    buffer.seek(0)
    resumed = Problem(make, quartic=True, theta0=first.theta)
    resumed.opt.load_state_dict(torch.load(buffer))
    np.testing.assert_array_equal(resumed.run(4)[-1], uninterrupted)


# ----------------------------------------------------------------------------- several groups, dtypes


@pytest.mark.parametrize(
    "make", [lambda p: Newton(p, line_search="strong_wolfe"), ConjugateGradient, BFGS], ids=["Newton", "CG", "BFGS"]
)
def test_float32_descends(make):
    _, opt, closure, loss_fn, _ = logistic(make, dtype=torch.float32)
    before = float(loss_fn().detach())
    for _ in range(3):
        opt.step(closure)
    assert float(loss_fn().detach()) < before - 0.05
    assert all(p.dtype == torch.float32 for p in opt.param_groups[0]["params"])


def test_hyperparameters_changed_in_one_group_only_are_refused_at_step():
    problem = Problem(Newton)
    problem.opt.param_groups[1]["damping"] = 0.1
    with pytest.raises(
        ValueError, match=r"`damping` must be the same in every param group, but got damping=0\.0 in group 0"
    ):
        problem.opt.step(problem.closure)


# ----------------------------------------------------------------------------- Lightning


class LogisticModule(L.LightningModule):
    def __init__(self, make_optimizer, create_graph=False):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(3, 1).double()
        self.make_optimizer, self.create_graph = make_optimizer, create_graph

    def full_batch_loss(self):
        with torch.no_grad():
            return float(F.binary_cross_entropy_with_logits(self.layer(_X).squeeze(1), _Y))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.binary_cross_entropy_with_logits(self.layer(x).squeeze(1), y)

    def backward(self, loss, *args, **kwargs):
        loss.backward(create_graph=self.create_graph)

    def configure_optimizers(self):
        return self.make_optimizer(self.parameters())


class ManualNaturalGradientModule(LogisticModule):
    def __init__(self):
        super().__init__(lambda p: NaturalGradient(p, lr=0.5, damping=1e-2))
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt = self.optimizers()
        loss = opt.step(lambda: F.binary_cross_entropy_with_logits(self.layer(x).squeeze(1), y, reduction="none"))
        self.log("train_loss", loss)


def fit(module, tmp_path, steps=3):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(_X, _Y), batch_size=len(_X))
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    before = module.full_batch_loss()
    trainer.fit(module, loader)
    return before, module.full_batch_loss(), trainer


@pytest.mark.parametrize(
    "make, create_graph",
    [
        (lambda p: Newton(p), False),
        (lambda p: Newton(p, solver="cg"), True),
        (lambda p: ConjugateGradient(p), False),
        (lambda p: BFGS(p), False),
        (lambda p: LBFGS(p, max_iter=5), False),
    ],
    ids=["Newton-finite-difference", "Newton-create_graph", "ConjugateGradient", "BFGS", "LBFGS"],
)
def test_lightning_fit_with_automatic_optimization(make, create_graph, tmp_path):
    before, after, trainer = fit(LogisticModule(make, create_graph=create_graph), tmp_path)
    assert after < before - 0.05
    assert trainer.global_step == 3


def test_lightning_fit_natural_gradient_with_manual_optimization(tmp_path):
    module = ManualNaturalGradientModule()
    before, after, trainer = fit(module, tmp_path)
    assert after < before - 0.05
    assert trainer.global_step == 3
    assert math.isfinite(float(trainer.callback_metrics["train_loss"]))


# ----------------------------------------------------------------------------- errors


def _p():
    return [torch.nn.Parameter(torch.zeros(2))]


BAD_ARGUMENTS = [
    (lambda: Newton(_p(), lr=-1.0), ValueError, r"`lr` must be >= 0, but got lr=-1.0\."),
    (lambda: Newton(_p(), damping=-1.0), ValueError, r"`damping` must be >= 0, but got damping=-1.0\."),
    (lambda: Newton(_p(), damping="0.1"), TypeError, r"`damping` must be a real number"),
    (
        lambda: Newton(_p(), solver="lu"),
        ValueError,
        r"`solver` must be one of 'auto', 'exact', 'cg', but got solver='lu'\.",
    ),
    (lambda: Newton(_p(), solver=1), TypeError, r"`solver` must be one of"),
    (
        lambda: Newton(_p(), cg_max_iter=0),
        ValueError,
        r"`cg_max_iter` must be an integer >= 1, but got cg_max_iter=0\.",
    ),
    (lambda: Newton(_p(), cg_max_iter=2.0), TypeError, r"`cg_max_iter` must be an integer"),
    (lambda: Newton(_p(), line_search="armijo"), ValueError, r"`line_search` must be one of None, 'strong_wolfe'"),
    (
        lambda: Newton([{"params": _p(), "lr": 0.5}, {"params": _p()}]),
        ValueError,
        r"`lr` must be the same in every param group, but got lr=0.5 in group 0 and lr=1.0 in group 1\.",
    ),
    (
        lambda: Newton([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2).double())]),
        TypeError,
        "one dtype",
    ),
    (
        lambda: ConjugateGradient(_p(), beta="hestenes_stiefel"),
        ValueError,
        r"`beta` must be one of 'polak_ribiere', 'fletcher_reeves'",
    ),
    (
        lambda: ConjugateGradient(_p(), restart_every=0),
        ValueError,
        r"`restart_every` must be an integer >= 1, but got restart_every=0\.",
    ),
    (lambda: ConjugateGradient(_p(), max_iter=0), ValueError, r"`max_iter` must be an integer >= 1"),
    (lambda: ConjugateGradient(_p(), c2=1e-4), ValueError, r"`c2` must be in \(0.0001, 1\), but got c2=0.0001\."),
    (lambda: ConjugateGradient(_p(), c1=0.0), ValueError, r"`c1` must be in \(0, 1\), but got c1=0.0\."),
    (lambda: BFGS(_p(), lr=-0.1), ValueError, r"`lr` must be >= 0, but got lr=-0.1\."),
    (lambda: BFGS(_p(), line_search="wolfe"), ValueError, r"`line_search` must be one of None, 'strong_wolfe'"),
    (lambda: BFGS(_p(), init_scale=1), TypeError, r"`init_scale` must be True or False"),
    (lambda: BFGS(_p(), max_params=0), ValueError, r"`max_params` must be an integer >= 1"),
    (lambda: LBFGS(_p(), lr=-1.0), ValueError, r"`lr` must be >= 0, but got lr=-1.0\."),
    (lambda: LBFGS(_p(), history_size=0), ValueError, r"`history_size` must be an integer >= 1"),
    (
        lambda: LBFGS(_p(), line_search_fn="backtracking"),
        ValueError,
        r"`line_search_fn` must be one of None, 'strong_wolfe'",
    ),
    (lambda: LBFGS(_p(), max_iter=1.5), TypeError, r"`max_iter` must be an integer"),
    (
        lambda: LBFGS([{"params": _p()}, {"params": _p()}]),
        ValueError,
        r"LBFGS supports a single param group, but got 2",
    ),
    (lambda: NaturalGradient(_p(), lr=-1.0), ValueError, r"`lr` must be >= 0, but got lr=-1.0\."),
    (
        lambda: NaturalGradient(_p(), lr=0.1, damping=-1.0),
        ValueError,
        r"`damping` must be >= 0, but got damping=-1.0\.",
    ),
    (lambda: NaturalGradient(_p(), lr=0.1, cg_tol=-1.0), ValueError, r"`cg_tol` must be >= 0"),
]


@pytest.mark.parametrize("factory, exception, match", BAD_ARGUMENTS)
def test_bad_arguments(factory, exception, match):
    with pytest.raises(exception, match=match):
        factory()


@pytest.mark.parametrize("make", [Newton, ConjugateGradient, BFGS, LBFGS, lambda p: NaturalGradient(p, lr=0.1)])
def test_missing_closure_says_what_closure_is_needed(make):
    with pytest.raises(ValueError, match=r"needs a closure.*(loss.backward\(\)|per-example losses)"):
        make(_p()).step()


def test_boundaries_are_accepted():
    Newton(_p(), lr=0.0, damping=0.0, cg_max_iter=1, cg_tol=0.0)
    ConjugateGradient(_p(), lr=0.0, restart_every=1, c1=1e-10, c2=1e-9)
    NaturalGradient(_p(), lr=0.0, damping=0.0)
