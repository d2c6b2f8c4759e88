"""Weighted logistic regression with fractional targets, many fits at once. Pure numpy.

One fit per row of the weights ``w`` (bootstrap counts, or ones for the plain fit): the rows
share the design ``x`` and the targets ``y`` (fractions in [0, 1]) and minimise

    sum w (log(1 + e^z) - y z) + ridge/2 |slopes|^2,    z = x beta

with the intercept (``x``'s first column) never penalised. ``newton`` is the safe solver (a
step that does not lower the loss is halved); ``refit`` runs plain Newton steps from a warm
start, for the bootstrap refits near the full-data fit, and hands any row they leave
unconverged to ``newton``. ``optimix.core.fit`` uses both.
"""

from __future__ import annotations

import numpy as np


def newton(x: np.ndarray, y: np.ndarray, w: np.ndarray, beta: np.ndarray, ridge: float,
           iters: int = 100, tol: float = 1e-9) -> np.ndarray:
    """B fits at once (rows of ``w`` and of the start ``beta``): Newton steps, halving a step
    that does not lower the loss, until every row has converged."""
    pen = _penalty(x.shape[1], ridge)

    def loss(b: np.ndarray, wb: np.ndarray) -> np.ndarray:
        z = b @ x.T
        return (wb * (np.logaddexp(0.0, z) - y * z)).sum(1) + 0.5 * (pen * b * b).sum(1)

    beta = beta.copy()
    current = loss(beta, w)
    active = np.ones(len(beta), dtype=bool)
    for _ in range(iters):
        b, wa = beta[active], w[active]
        step, _ = _newton_step(x, y, wa, b, pen)
        t = np.ones(len(b))
        old = current[active]
        for _ in range(30):
            new = loss(b - t[:, None] * step, wa)
            bad = new > old + 1e-12 * np.abs(old)
            if not bad.any():
                break
            t[bad] /= 2
        new = np.minimum(new, old)
        moved = np.where(new < old, 1.0, 0.0)[:, None] * t[:, None] * step
        idx = np.flatnonzero(active)
        beta[idx] = b - moved
        current[idx] = new
        done = np.abs(moved).max(1) < tol * (1 + np.abs(b).max(1))
        active[idx[done]] = False
        if not active.any():
            break
    return beta


def refit(x: np.ndarray, y: np.ndarray, w: np.ndarray, start: np.ndarray, ridge: float,
          iters: int = 8, tol: float = 1e-5) -> np.ndarray:
    """Many fits near ``start`` (bootstrap resamples): plain Newton steps, which converge in a
    few from a warm start; a row they leave unconverged is redone by the safe ``newton``."""
    pen = _penalty(x.shape[1], ridge)
    beta = np.repeat(start, len(w), 0)
    w32 = w.astype(np.float32, copy=False)
    for _ in range(iters):
        step, _ = _newton_step(x, y, w32, beta, pen)
        beta = beta - step
        if np.abs(step).max() < tol * (1 + np.abs(beta).max()):
            break
    small = np.abs(step).max(1) < tol * (1 + np.abs(beta).max(1))
    bad = ~(np.isfinite(beta).all(1) & small)
    if bad.any():
        beta[bad] = newton(x, y, w[bad].astype(float), np.repeat(start, int(bad.sum()), 0), ridge)
    return beta


def _newton_step(x, y, w, beta, pen) -> tuple[np.ndarray, np.ndarray]:
    """The Newton step and the gradient of the penalised loss, per row.

    The (B, n) work runs in ``w``'s dtype (float32 for the bootstrap: half the memory
    traffic, and its rounding is far below the resampling noise), in place where it can.
    """
    d = x.shape[1]
    xs, ys = x.astype(w.dtype, copy=False), y.astype(w.dtype, copy=False)
    p = beta.astype(w.dtype) @ xs.T
    np.multiply(p, 0.5, out=p)  # sigmoid(z) = (1 + tanh(z / 2)) / 2
    np.tanh(p, out=p)
    p += 1.0
    p *= 0.5
    r = p - ys
    r *= w
    grad = (r @ xs).astype(float) + pen * beta
    np.subtract(1.0, p, out=r)
    r *= p
    r *= w  # the Hessian's weights w p (1 - p)
    outer = (xs[:, :, None] * xs[:, None, :]).reshape(len(x), d * d)
    hess = (r @ outer).astype(float).reshape(-1, d, d) + np.diag(pen) + 1e-12 * np.eye(d)
    return np.linalg.solve(hess, grad[:, :, None])[:, :, 0], grad


def _penalty(d: int, ridge: float) -> np.ndarray:
    pen = np.full(d, ridge)
    pen[0] = 0.0  # never the intercept
    return pen
