"""Naive float64 transcriptions of Algorithm 8.8 (Newton), Algorithm 8.9 (nonlinear CG) and BFGS (§8.6).

Line by line from the book, with only the fixes the book needs to run at all: damping per
eq. 8.28, β_1 = 0 and ρ_t = −g_t + β_tρ_{t−1} in CG, and ρ_t = −M_t g_t in BFGS. Deliberately
plain numpy: Newton inverts H as the book says (np.linalg.inv), CG takes the exact step
ε* = −gᵀρ / (ρᵀHρ) of a quadratic, and BFGS multiplies out the product form of the update.
"""

import numpy as np


def newton(theta, grad, hess, steps, damping=lambda k: 0.0, lr=lambda k: 1.0):
    """Algorithm 8.8 with Levenberg–Marquardt damping (eq. 8.28) and a step size ε (1 in the book)."""
    theta = np.array(theta, dtype=np.float64)
    out = []
    for k in range(steps):
        g = grad(theta)  # g <- (1/m) grad sum L
        h = hess(theta)  # H <- (1/m) hessian sum L
        h_inv = np.linalg.inv(h + damping(k) * np.eye(len(theta)))  # compute H^-1 (damped, eq. 8.28)
        delta = -h_inv @ g  # delta theta = -H^-1 g
        theta = theta + lr(k) * delta  # theta <- theta + delta theta
        out.append(theta.copy())
    return out


def conjugate_gradient_quadratic(theta, a, b, steps, beta="polak_ribiere", restart_every=None):
    """Algorithm 8.9 on J(θ) = ½θᵀAθ − bᵀθ, with the exact line search of a quadratic."""
    theta = np.array(theta, dtype=np.float64)
    rho_prev = np.zeros_like(theta)  # rho_0 = 0
    g_prev = np.zeros_like(theta)  # g_0 = 0
    out = []
    for t in range(1, steps + 1):
        g = a @ theta - b  # g_t <- grad J
        if t == 1:
            beta_t = 0.0  # fix: beta_1 is 0/0 in the book
        elif beta == "fletcher_reeves":
            beta_t = (g @ g) / (g_prev @ g_prev)  # eq. 8.30
        else:
            beta_t = ((g - g_prev) @ g) / (g_prev @ g_prev)  # eq. 8.31
        if restart_every is not None and (t - 1) % restart_every == 0:
            beta_t = 0.0  # nonlinear CG: reset
        rho = -g + beta_t * rho_prev  # rho_t = -g_t + beta_t rho_{t-1}
        eps = -(g @ rho) / (rho @ a @ rho)  # epsilon* = argmin J(theta + eps rho), exact on a quadratic
        theta = theta + eps * rho  # theta_{t+1} = theta_t + eps* rho_t
        g_prev, rho_prev = g, rho
        out.append(theta.copy())
    return out


def bfgs(theta, grad, step_sizes, init_scale=False):
    """BFGS (eq. 8.33) with given step sizes ε_t; returns the iterates and the matrices M_t used."""
    theta = np.array(theta, dtype=np.float64)
    n = len(theta)
    m = np.eye(n)  # M_0 = I
    theta_prev = g_prev = None
    iterates, matrices = [], []
    for t, eps in enumerate(step_sizes):
        g = grad(theta)  # g_t <- grad J
        if t > 0:
            s = theta - theta_prev  # s = delta theta
            y = g - g_prev  # y = delta g
            if y @ s > 0:  # curvature condition
                if init_scale and t == 1:
                    m = (y @ s) / (y @ y) * np.eye(n)
                varrho = 1.0 / (y @ s)
                left = np.eye(n) - varrho * np.outer(s, y)
                right = np.eye(n) - varrho * np.outer(y, s)
                m = left @ m @ right + varrho * np.outer(s, s)  # M <- (I - ϱsyᵀ)M(I - ϱysᵀ) + ϱssᵀ
        rho = -m @ g  # rho_t = -M_t g_t (the book prints +M_t g_t)
        theta_prev, g_prev = theta, g
        theta = theta + eps * rho  # theta_{t+1} = theta_t + eps rho_t
        iterates.append(theta.copy())
        matrices.append(m.copy())
    return iterates, matrices
