"""Naive float64 transcriptions of Algorithms 8.1-8.7, line by line from the book.

Each function runs ``steps`` iterations on a gradient oracle ``grad(theta) -> g`` and returns the
list of iterates. ``lr(k)`` and friends give the hyperparameters of iteration k (0-based) as arrays
broadcast over the coordinates, so per-group values and mid-run changes are just arrays.
Deliberately plain numpy: no vectorized tricks beyond elementwise arithmetic.
"""

import numpy as np


def sgd(theta, grad, lr, steps):
    """Algorithm 8.1."""
    theta = np.array(theta, dtype=np.float64)
    out = []
    for k in range(steps):
        g = grad(theta)  # g <- (1/m) grad sum L
        theta = theta - lr(k) * g  # theta <- theta - eps_k g
        out.append(theta.copy())
    return out


def momentum(theta, grad, lr, alpha, steps, v=None):
    """Algorithm 8.2."""
    theta = np.array(theta, dtype=np.float64)
    v = np.zeros_like(theta) if v is None else np.array(v, dtype=np.float64)
    out = []
    for k in range(steps):
        g = grad(theta)  # g <- (1/m) grad sum L
        v = alpha(k) * v - lr(k) * g  # v <- alpha v - eps g
        theta = theta + v  # theta <- theta + v
        out.append((theta.copy(), v.copy()))
    return out


def nesterov(theta, grad, lr, alpha, steps, v=None):
    """Algorithm 8.3."""
    theta = np.array(theta, dtype=np.float64)
    v = np.zeros_like(theta) if v is None else np.array(v, dtype=np.float64)
    out = []
    for k in range(steps):
        interim = theta + alpha(k) * v  # theta~ <- theta + alpha v
        g = grad(interim)  # g <- (1/m) grad at theta~
        v = alpha(k) * v - lr(k) * g  # v <- alpha v - eps g
        theta = theta + v  # theta <- theta + v
        out.append((theta.copy(), v.copy()))
    return out


def adagrad(theta, grad, lr, delta, steps, r0=0.0):
    """Algorithm 8.4 (r0: the accumulator's initial value; the book's is 0)."""
    theta = np.array(theta, dtype=np.float64)
    r = np.zeros_like(theta) + r0  # r = 0
    out = []
    for k in range(steps):
        g = grad(theta)
        r = r + g * g  # r <- r + g . g
        dtheta = -lr(k) / (delta + np.sqrt(r)) * g  # dtheta <- -eps/(delta + sqrt r) . g
        theta = theta + dtheta
        out.append(theta.copy())
    return out


def rmsprop(theta, grad, lr, rho, delta, steps, delta_outside=False):
    """Algorithm 8.5 (delta_outside: torch's placement, -eps/(sqrt(r) + delta) . g)."""
    theta = np.array(theta, dtype=np.float64)
    r = np.zeros_like(theta)
    out = []
    for k in range(steps):
        g = grad(theta)
        r = rho * r + (1 - rho) * g * g  # r <- rho r + (1 - rho) g . g
        if delta_outside:
            dtheta = -lr(k) / (np.sqrt(r) + delta) * g
        else:
            dtheta = -lr(k) / np.sqrt(delta + r) * g  # dtheta = -eps/sqrt(delta + r) . g
        theta = theta + dtheta
        out.append(theta.copy())
    return out


def rmsprop_momentum(theta, grad, lr, rho, delta, alpha, steps):
    """RMSProp with heavy-ball momentum in the book's units: v <- alpha v - eps g/sqrt(delta + r)."""
    theta = np.array(theta, dtype=np.float64)
    r = np.zeros_like(theta)
    v = np.zeros_like(theta)
    out = []
    for k in range(steps):
        g = grad(theta)
        r = rho * r + (1 - rho) * g * g
        v = alpha(k) * v - lr(k) / np.sqrt(delta + r) * g
        theta = theta + v
        out.append((theta.copy(), v.copy()))
    return out


def rmsprop_nesterov(theta, grad, lr, rho, delta, alpha, steps):
    """Algorithm 8.6, with delta kept inside the square root (the book prints none)."""
    theta = np.array(theta, dtype=np.float64)
    r = np.zeros_like(theta)
    v = np.zeros_like(theta)
    out = []
    for k in range(steps):
        interim = theta + alpha(k) * v  # theta~ <- theta + alpha v
        g = grad(interim)  # gradient at theta~
        r = rho * r + (1 - rho) * g * g  # r <- rho r + (1 - rho) g . g
        v = alpha(k) * v - lr(k) / np.sqrt(delta + r) * g  # v <- alpha v - eps/sqrt(r) . g
        theta = theta + v  # theta <- theta + v
        out.append((theta.copy(), v.copy()))
    return out


def adam(theta, grad, lr, rho1, rho2, delta, steps):
    """Algorithm 8.7."""
    theta = np.array(theta, dtype=np.float64)
    s = np.zeros_like(theta)
    r = np.zeros_like(theta)
    t = 0
    out = []
    for k in range(steps):
        g = grad(theta)
        t = t + 1
        s = rho1 * s + (1 - rho1) * g  # s <- rho1 s + (1 - rho1) g
        r = rho2 * r + (1 - rho2) * g * g  # r <- rho2 r + (1 - rho2) g . g
        s_hat = s / (1 - rho1**t)
        r_hat = r / (1 - rho2**t)
        dtheta = -lr(k) * s_hat / (np.sqrt(r_hat) + delta)  # dtheta = -eps s^/(sqrt r^ + delta)
        theta = theta + dtheta
        out.append(theta.copy())
    return out
