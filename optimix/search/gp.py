"""The frontier sampler's model of quality: a Gaussian process with a length scale per dimension.

A zero-mean GP on standardised targets with a Matern-5/2 kernel whose length scale is fitted
per search dimension (ARD: a dimension that does not matter gets a long scale and stops
deciding which points are near). The columns of one dimension (the one-hot columns of a
choice) share a scale, as a Hamming distance would. The length scales, the signal variance
and the noise are the maximum a posteriori under log-normal priors (the length scales' grow
with the number of dimensions, as in Hvarfner et al. 2024, arXiv:2402.02229), by L-BFGS-B
from the best isotropic fit on a small grid; with too few points to say more, the isotropic
fit stands. Above ``FIT_POINTS`` points the hyperparameters are fitted to a random subset of
that many (each step of the optimiser costs O(n^3)), and the GP conditions on all of them.
Pure numpy, scipy for the optimiser.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import cho_solve, solve_triangular

_SQRT5 = math.sqrt(5.0)
_SCALES = (0.15, 0.3, 0.6, 1.2)  # the isotropic grid the fit starts from
_NOISES = (1e-3, 1e-2, 0.1, 0.3)
_BOUNDS = {"scale": (math.log(0.03), math.log(30.0)), "signal": (math.log(0.05), math.log(20.0)),
           "noise": (math.log(1e-4), math.log(1.0))}
_SCALE_SD = 1.5  # the length scales' prior: log-normal, sd in log units
_SIGNAL_PRIOR = (0.0, 1.0)  # mean and sd of log signal variance (targets are standardised)
_NOISE_PRIOR = (math.log(1e-2), 2.0)
FIT_POINTS = 200


def matern(d2: np.ndarray) -> np.ndarray:
    """Matern-5/2 at squared scaled distances ``d2``."""
    r = np.sqrt(np.maximum(d2, 0.0))
    return (1.0 + _SQRT5 * r + 5.0 / 3.0 * d2) * np.exp(-_SQRT5 * r)


class GP:
    """A fitted GP (``GP.fit``): ``predict`` and ``posterior`` of the noise-free quality."""

    def __init__(self, x: np.ndarray, z: np.ndarray, groups: np.ndarray, y_mean: float, y_sd: float,
                 scales: np.ndarray, signal: float, noise: float, known: np.ndarray):
        self.x, self.groups, self.y_mean, self.y_sd = x, groups, y_mean, y_sd
        self.scales, self.signal, self.noise = scales, signal, noise
        self.chol = np.linalg.cholesky(self._kernel(x, x) + np.diag(noise + known))
        self.alpha = _solve(self.chol, z)

    @property
    def theta(self) -> np.ndarray:
        """The hyperparameters (log length scales, log signal, log noise), for ``fit(start=)``
        and ``GP.at``."""
        return np.array([*np.log(self.scales), math.log(self.signal), math.log(self.noise)])

    @classmethod
    def _with(cls, theta: np.ndarray, x, z, groups, y_mean, y_sd, known) -> GP:
        n_groups = len(theta) - 2
        return cls(x, z, groups, y_mean, y_sd, np.exp(theta[:n_groups]), math.exp(theta[-2]), math.exp(theta[-1]),
                   known)

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.signal * matern(_scaled_d2(_per_group(a, b, self.groups), self.scales))

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, prior_sd: float = 1e-3, known_noise: np.ndarray | None = None,
            groups: np.ndarray | None = None, start: np.ndarray | None = None) -> GP:
        """Fit to inputs ``x`` (in [0, 1]) and targets ``y``; ``prior_sd``: the least spread the
        targets are standardised by; ``known_noise``: each target's own variance (a mean over
        seeds), added to the fitted noise; ``groups``: the dimension of each column of ``x``
        (its columns share a length scale; default: a scale per column); ``start``: an earlier
        fit's ``theta``, where the optimiser starts if it is better than the grid's best."""
        x, z, groups, y_mean, y_sd, known = _standardised(x, y, prior_sd, known_noise, groups)
        rows = np.arange(len(x))
        if len(x) > FIT_POINTS:  # a seeded subset: the same points give the same fit
            rows = np.sort(np.random.default_rng(len(x)).choice(len(x), FIT_POINTS, replace=False))
        d2 = _per_group(x[rows], x[rows], groups)
        n_groups = d2.shape[0]
        scale_mean = math.log(0.5 * math.sqrt(max(1, n_groups)))

        def objective(theta: np.ndarray, grad: bool = True):
            return neg_log_posterior(theta, d2, z[rows], known[rows], scale_mean, grad)

        starts = [np.array([math.log(s)] * n_groups + [0.0, math.log(v)]) for s in _SCALES for v in _NOISES]
        best = min(starts + ([] if start is None else [np.asarray(start, dtype=float)]),
                   key=lambda t: objective(t, grad=False))
        if len(x) > 2:
            from scipy.optimize import minimize

            bounds = [_BOUNDS["scale"]] * n_groups + [_BOUNDS["signal"], _BOUNDS["noise"]]
            found = minimize(objective, best, jac=True, method="L-BFGS-B", bounds=bounds,
                             options={"maxiter": 200})
            if found.fun <= objective(best, grad=False):  # found.fun: the objective at found.x
                best = found.x
        return cls._with(best, x, z, groups, y_mean, y_sd, known)

    @classmethod
    def at(cls, theta: np.ndarray, x: np.ndarray, y: np.ndarray, prior_sd: float = 1e-3,
           known_noise: np.ndarray | None = None, groups: np.ndarray | None = None) -> GP:
        """The GP with hyperparameters ``theta`` (an earlier fit's), conditioned on ``x``, ``y``
        as ``fit`` would be: no optimiser, one Cholesky factorisation."""
        return cls._with(theta, *_standardised(x, y, prior_sd, known_noise, groups))

    def posterior(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of the modelled quality (noise-free) at ``x``."""
        ks = self._kernel(x, self.x)
        v = solve_triangular(self.chol, ks.T, lower=True)
        cov = self._kernel(x, x) - v.T @ v
        return self.y_mean + self.y_sd * (ks @ self.alpha), self.y_sd ** 2 * cov

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the modelled quality (noise-free) at each of ``x``."""
        ks = self._kernel(x, self.x)
        v = solve_triangular(self.chol, ks.T, lower=True)
        var = np.clip(self.signal - (v ** 2).sum(0), 1e-9, None)
        return self.y_mean + self.y_sd * (ks @ self.alpha), self.y_sd * np.sqrt(var)


def neg_log_posterior(theta: np.ndarray, d2: np.ndarray, z: np.ndarray, known: np.ndarray, scale_mean: float,
                      grad: bool = True):
    """Minus the log posterior of ``theta`` (log length scales, log signal, log noise) given
    per-group squared distances ``d2`` and standardised targets ``z``; with its gradient."""
    n_groups = d2.shape[0]
    scales, signal, noise = np.exp(theta[:n_groups]), math.exp(theta[-2]), math.exp(theta[-1])
    r2 = _scaled_d2(d2, scales)
    base = matern(r2)
    k = signal * base + np.diag(noise + known)
    try:
        chol = np.linalg.cholesky(k)
    except np.linalg.LinAlgError:
        return (1e10, np.zeros_like(theta)) if grad else 1e10
    alpha = _solve(chol, z)
    lml = -0.5 * z @ alpha - np.log(np.diag(chol)).sum()
    prior = (-0.5 * ((theta[:n_groups] - scale_mean) / _SCALE_SD) ** 2).sum() \
        - 0.5 * ((theta[-2] - _SIGNAL_PRIOR[0]) / _SIGNAL_PRIOR[1]) ** 2 \
        - 0.5 * ((theta[-1] - _NOISE_PRIOR[0]) / _NOISE_PRIOR[1]) ** 2
    if not grad:
        return -(lml + prior)
    inverse = _solve(chol, np.eye(len(z)))
    a = np.outer(alpha, alpha) - inverse
    r = np.sqrt(np.maximum(r2, 0.0))
    shape = signal * 5.0 / 3.0 * (1.0 + _SQRT5 * r) * np.exp(-_SQRT5 * r)  # dk/dlog l_g = shape * d2_g / l_g^2
    g = np.empty_like(theta)
    for j in range(n_groups):
        g[j] = 0.5 * (a * shape * d2[j]).sum() / scales[j] ** 2 - (theta[j] - scale_mean) / _SCALE_SD ** 2
    g[-2] = 0.5 * (a * signal * base).sum() - (theta[-2] - _SIGNAL_PRIOR[0]) / _SIGNAL_PRIOR[1] ** 2
    g[-1] = 0.5 * noise * np.trace(a) - (theta[-1] - _NOISE_PRIOR[0]) / _NOISE_PRIOR[1] ** 2
    return -(lml + prior), -g


def _standardised(x, y, prior_sd, known_noise, groups):
    """(x, standardised targets, groups, their mean, their spread, known noise in target units)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    groups = np.arange(x.shape[1]) if groups is None else np.asarray(groups)
    y_mean, y_sd = float(y.mean()), float(max(y.std(), prior_sd))
    known = np.zeros(len(x)) if known_noise is None else np.asarray(known_noise, dtype=float) / y_sd ** 2
    return x, (y - y_mean) / y_sd, groups, y_mean, y_sd, known


def _per_group(a: np.ndarray, b: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(groups, len(a), len(b)): squared distances within each group of columns, as
    |a|^2 + |b|^2 - 2 a.b (exact on one-hot columns; no (len(a), len(b), columns) array)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = []
    for g in np.unique(groups):
        ag, bg = a[:, groups == g], b[:, groups == g]
        d2 = (ag ** 2).sum(1)[:, None] + (bg ** 2).sum(1)[None, :] - 2.0 * ag @ bg.T
        out.append(np.maximum(d2, 0.0))
    return np.stack(out)


def _scaled_d2(d2: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return np.tensordot(1.0 / scales ** 2, d2, axes=1)


def _solve(chol: np.ndarray, b: np.ndarray) -> np.ndarray:
    return cho_solve((chol, True), b)


class HalfRank:
    """Output warping for the GP (Google Vizier's half-rank warping, Song et al. 2022,
    arXiv:2207.13676): values at or above the median are kept; each value below it is moved to
    where a normal distribution centred at the median, with the upper half's spread, puts its
    rank. A few failed configs far below the rest then no longer set the GP's scale (a model
    stretched to fit them expects a wide spread everywhere, and buys cheap points for a gain
    that is not there). Monotone, so ``inverse`` maps a modelled value back; the identity above
    the median, where a frontier's gains lie."""

    def __init__(self, y: np.ndarray):
        from statistics import NormalDist

        y = np.asarray(y, dtype=float)
        self.median = float(np.median(y))
        good = y[y >= self.median]
        spread = float(np.sqrt(np.mean((good - self.median) ** 2))) if len(good) else 0.0
        low = np.unique(y[y < self.median])
        if spread <= 0.0 or not len(low):
            self._from, self._to = np.array([self.median]), np.array([self.median])
            return
        ranks = np.searchsorted(np.sort(y), low, side="left") + 0.5  # each value's rank among all
        warped = self.median + spread * np.array([NormalDist().inv_cdf(min(0.5, r / len(y))) for r in ranks])
        warped = np.maximum.accumulate(np.minimum(warped, self.median))  # kept monotone with the values
        self._from = np.append(low, self.median)
        self._to = np.append(warped, self.median)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=float)
        return np.where(y >= self.median, y, _line(y, self._from, self._to))

    def inverse(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        return np.where(z >= self.median, z, _line(z, self._to, self._from))


def _line(v: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Piecewise-linear through (xs, ys), increasing; beyond the lowest point, the first segment's
    slope (1 where there is one point)."""
    inside = np.interp(v, xs, ys)
    if len(xs) < 2 or xs[1] <= xs[0]:
        return np.where(v < xs[0], ys[0] + (v - xs[0]), inside)
    slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    return np.where(v < xs[0], ys[0] + slope * (v - xs[0]), inside)
