"""The threshold law behind ``optimix plan``, fitted in two stages so that its intervals see
how well the law itself fits. Pure numpy.

Stage 1, **thresholds per size**: one logistic regression of accuracy on log frequency, with
an offset for each recorded size (each bin of sizes when sizes are many), one slope ``k``
shared by all, and log tokens when they vary on their own. Each size gets its 50% frequency
``theta_b = log f_thres`` with a standard error (the quasi-binomial covariance: the trials'
own scatter, seeds included, sets it). The residual scatter of single trials around the fit,
on the logit scale, is the **seed noise** of one trained trial.

Stage 2, **the curve over sizes**: ``theta`` against log N, a straight line (the power law
``f_thres = c N^-s``) or, from 4 sizes on, a quadratic, beyond the recorded sizes continued as
a line with the end's slope. Sizes do not sit exactly on any such curve: the **misfit**
``tau^2`` (between-size variance beyond the thresholds' own errors, DerSimonian-Laird) is
estimated and carried into every prediction at a size that was not recorded, with
Student-t draws on ``sizes - terms`` degrees of freedom, so a curve fitted on few sizes
answers with wide intervals, wider with distance from the recorded sizes.

Predictions are draws: ``k``, the token slope, each recorded size's threshold, the curve's
coefficients, the misfit and (for one trial) the seed noise, drawn together ``draws`` times.
``optimix.core.fit`` wraps this as the planning ``Fit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimix.core import logistic

RIDGE = 1e-2
"""L2 penalty on the standardised slopes and size offsets: keeps separable (0/1) bins finite."""
SAME_SIZE = 5e-3
"""Sizes within this in log (0.5%) are one recorded size."""
UNINFORMED = 0.1
"""A bin whose trials' p(1 - p) sum to less than this (not one trial between 0.11 and 0.89) has
no threshold of its own: it is left out of the curve over sizes."""
TAU_PRIOR = 0.3
"""The misfit (in log threshold) assumed at unrecorded sizes when the curve has no degree of
freedom left to measure it (a line through 2 sizes): about twice the study reproduction's
power-law misfit (0.16)."""
MAX_SIZES = 12
"""Up to this many distinct sizes, each is its own bin; more are grouped into quantile bins."""


@dataclass
class Stage1:
    """Per-bin thresholds; the logistic slope ``k`` runs linearly in log size (held at the
    recorded sizes' ends past them)."""

    k: float
    """``k`` at the trials' mean log size ``mx``."""
    k_slope: float
    """d k / d log size."""
    k_cov: np.ndarray
    """Covariance of (k, k_slope)."""
    mx: float
    span: tuple[float, float]
    """The trials' log sizes: ``k`` is held at its value at the ends past them."""
    theta: np.ndarray
    """log f_thres of each bin, at the trials' mean log tokens and the bin's mean log size."""
    theta_se: np.ndarray
    x: np.ndarray
    """Each bin's mean log size."""
    bt: float
    """Logit per log token (0 when tokens are not in the model): f_thres ~ T^-(bt / k)."""
    bt_se: float
    within: float
    """The straight law's slope of log f_thres on log size (bins' offsets aside)."""
    within_se: float
    mean_lt: float
    seed_sd: float
    """Scatter of one trial around its config's mean, on the logit scale (seeds, evaluation)."""
    cell_sd: float
    """Scatter of configs' means around the fit, on the logit scale (the law's shape misfit)."""
    discrete: bool
    seed_measured: bool = False
    """Whether ``seed_sd`` was measured (configs trained at several seeds, ``search.replicates``);
    else it is the stated prior ``SEED_SD_PRIOR``."""


@dataclass
class Curve:
    """``theta`` over log size: coefficients of powers of (x - x0), misfit, degrees of freedom."""

    degree: int
    x0: float
    coef: np.ndarray
    cov: np.ndarray
    tau: float
    df: int
    span: tuple[float, float]
    q: float
    """Weighted residual sum of squares (thresholds' own errors only): the goodness-of-fit figure."""
    assumed: bool = False
    """Whether ``tau`` is ``TAU_PRIOR``, assumed: the curve passes through every size it has."""

    def at(self, x: np.ndarray, coef: np.ndarray | None = None) -> np.ndarray:
        """theta at log sizes ``x`` (draws in rows of ``coef``), continued as a line past the span."""
        c = np.atleast_2d(self.coef if coef is None else coef)
        x = np.asarray(x, dtype=float)
        inside = np.clip(x, *self.span) - self.x0
        powers = np.stack([inside ** j for j in range(self.degree + 1)], -1)
        slope_powers = np.stack([j * inside ** max(j - 1, 0) for j in range(self.degree + 1)], -1)
        beyond = x - np.clip(x, *self.span)
        value = np.tensordot(c, powers, axes=([1], [-1])) + np.tensordot(c, slope_powers, axes=([1], [-1])) * beyond
        return value if coef is not None else value[0]

    def p_value(self) -> float | None:
        """Chance of a misfit this large if the sizes sat on the curve (chi-square, Wilson-Hilferty)."""
        if self.df < 1:
            return None
        return chi2_sf(self.q, self.df)


@dataclass
class Law:
    stage1: Stage1
    curve: Curve | None
    line: Curve | None
    """The power law (a straight line) fitted whatever curve is used: its slope is ``-s``."""
    mean_lf: float
    notes: list[str] = field(default_factory=list)


def fit_law(lf: np.ndarray, lx: np.ndarray, lt: np.ndarray | None, y: np.ndarray,
            *, use_size: bool) -> Law:
    """Both stages on log frequency, log size, log tokens (None: not in the model), accuracy."""
    stage1 = _stage1(lf, lx, lt, y, use_size=use_size)
    notes = []
    curve = line = None
    informed = int(np.isfinite(stage1.theta_se).sum())
    if use_size and informed >= 2:
        line = _curve(stage1, 1)
        curve = _curve(stage1, 2) if informed >= 4 else line
        if curve.assumed:
            notes.append(f"{informed} sizes: the law over sizes cannot be checked; its misfit at other "
                         f"sizes is assumed ({TAU_PRIOR} in log threshold)")
    elif use_size:
        notes.append(f"{informed} recorded size(s) with trials near their threshold: the model cannot "
                     "say what changing the size does")
    return Law(stage1=stage1, curve=curve, line=line, mean_lf=float(lf.mean()), notes=notes)


def size_bins(lx: np.ndarray, use_size: bool) -> tuple[np.ndarray, bool]:
    """Bin index of each trial, and whether bins are the distinct recorded sizes."""
    if not use_size:
        return np.zeros(len(lx), dtype=int), True
    distinct = np.unique(np.round(lx / SAME_SIZE))
    if len(distinct) <= MAX_SIZES:
        return np.searchsorted(distinct, np.round(lx / SAME_SIZE)), True
    groups = int(np.clip(len(lx) // 15, 3, 8))
    edges = np.quantile(lx, np.linspace(0, 1, groups + 1)[1:-1])
    return np.searchsorted(edges, lx, side="right"), False


@dataclass
class _Design:
    """The stage-1 design matrix and where each column sits (``_stage1``)."""

    x: np.ndarray
    mf: float
    sf: float
    mx: float
    sx: float
    size_col: int | None
    first: int
    """The column of bin 1's offset (bin 0 has none)."""
    shape_col: int | None
    mean_lt: float
    st: float


def _design(lf, lx, lt, bins, nb: int, use_size: bool) -> _Design:
    """Columns: 1, log f, log size (one slope for all), an offset per bin of sizes beyond the
    first, log tokens, and log f x log size (the slope's change with size)."""
    mf, sf = lf.mean(), lf.std()
    mx, sx = lx.mean(), (lx.std() or 1.0)
    cols = [np.ones(len(lf)), (lf - mf) / sf]
    size_col = None
    if use_size:
        size_col = len(cols)
        cols.append((lx - mx) / sx)
    first = len(cols)
    cols += [(bins == b).astype(float) for b in range(1, nb)]
    mean_lt = float(lt.mean()) if lt is not None else 0.0
    st = (lt.std() or 1.0) if lt is not None else 1.0
    if lt is not None:
        cols.append((lt - mean_lt) / st)
    shape_col = None
    if use_size:
        shape_col = len(cols)
        cols.append(cols[1] * cols[size_col])
    return _Design(np.column_stack(cols), float(mf), float(sf), float(mx), float(sx), size_col, first,
                   shape_col, mean_lt, float(st))


def _bin_thresholds(d: _Design, beta, cov, k: float, k_slope: float, xb, span, informed) -> tuple:
    """Each bin's threshold (log f at logit 0) and its delta-method standard error; a bin
    with no trial near its threshold (``informed`` False) has an infinite one."""
    nb = len(xb)
    theta, theta_se = np.empty(nb), np.empty(nb)
    for b in range(nb):
        g = np.zeros(d.x.shape[1])  # theta_b = mf - level / k, level = this bin's logit at f = e^mf
        g[0] = 1.0
        if d.size_col is not None:
            g[d.size_col] = (xb[b] - d.mx) / d.sx
        if b:
            g[d.first + b - 1] = 1.0
        level = g @ beta
        zk = (np.clip(xb[b], *span) - d.mx) / d.sx
        kb = k + k_slope * (np.clip(xb[b], *span) - d.mx)
        theta[b] = d.mf - level / kb
        grad = -g / kb
        grad[1] = level / (kb * kb * d.sf)
        if d.shape_col is not None:
            grad[d.shape_col] = level * zk / (kb * kb * d.sf)
        theta_se[b] = math.sqrt(max(grad @ cov @ grad, 0.0)) if informed[b] else math.inf
    return theta, theta_se


def _stage1(lf, lx, lt, y, *, use_size: bool) -> Stage1:
    """Logistic in log f with a size slope, an offset per bin of sizes (the ridge shrinks
    offsets to the straight law when a bin says little) and log tokens (``_design``)."""
    bins, discrete = size_bins(lx, use_size)
    nb = int(bins.max()) + 1
    counts = np.bincount(bins, minlength=nb)
    xb = np.bincount(bins, weights=lx, minlength=nb) / np.maximum(counts, 1)
    d = _design(lf, lx, lt, bins, nb, use_size)
    x = d.x
    pen = np.full(x.shape[1], RIDGE)
    pen[0] = 0.0
    beta = logistic.newton(x, y, np.ones((1, len(y))), np.zeros((1, x.shape[1])), RIDGE)[0]
    z = x @ beta
    p = 1 / (1 + np.exp(-z))
    var = np.maximum(p * (1 - p), 1e-6)
    dispersion = float(np.sum((y - p) ** 2 / var) / max(len(y) - x.shape[1], 1))
    cov = dispersion * np.linalg.pinv((x * var[:, None]).T @ x + np.diag(pen))
    k = beta[1] / d.sf
    k_slope = beta[d.shape_col] / (d.sx * d.sf) if d.shape_col is not None else 0.0
    jac = np.zeros((2, x.shape[1]))
    jac[0, 1] = 1 / d.sf
    if d.shape_col is not None:
        jac[1, d.shape_col] = 1 / (d.sx * d.sf)
    span = (float(lx.min()), float(lx.max()))
    # a bin with no trial near its threshold: the ridge, not the data, placed it
    informed = [var[bins == b][var[bins == b] > 1e-6].sum() >= UNINFORMED for b in range(nb)]
    theta, theta_se = _bin_thresholds(d, beta, cov, k, k_slope, xb, span, informed)

    def slope(column: int | None, scale: float) -> tuple[float, float]:
        """d theta / d log(input) for one column, with its delta-method standard error."""
        if column is None:
            return 0.0, 0.0
        b = beta[column]
        g = np.zeros(x.shape[1])
        g[column], g[1] = -1 / (scale * k), b / (scale * k * k * d.sf)
        return float(-b / (scale * k)), math.sqrt(max(g @ cov @ g, 0.0))

    within, within_se = slope(d.size_col, d.sx)
    token_col = d.first + nb - 1
    bt, bt_se = ((beta[token_col] / d.st, math.sqrt(max(cov[token_col, token_col], 0.0)) / d.st)
                 if lt is not None else (0.0, 0.0))
    return Stage1(k=float(k), k_slope=float(k_slope), k_cov=jac @ cov @ jac.T, mx=float(d.mx), span=span,
                  theta=theta, theta_se=theta_se, x=xb, bt=float(bt), bt_se=bt_se, within=within,
                  within_se=within_se, mean_lt=d.mean_lt, **_scatter(lf, lx, lt, y, z), discrete=discrete)


SEED_SD_PRIOR = 1.5
"""Seed noise of one trial on the logit scale where no config was trained at several seeds: a
conservative prior (sharp, seed-dependent transitions move a trial by more than 1 logit), stated
with every answer that uses it ("seed noise unmeasured")."""


def _scatter(lf, lx, lt, y, z) -> dict[str, Any]:
    """Residual scatter on the logit scale of the trials in the transition (accuracy and
    prediction inside [0.02, 0.98]), split into seed noise (within configs trained more than
    once: replicates) and the configs' misfit (the rest). Without repeats the scatter is all
    counted as misfit, which widens the intervals of the mean, and one trial's seed noise is
    the prior ``SEED_SD_PRIOR`` (``seed_measured`` False)."""
    p = 1 / (1 + np.exp(-z))
    mid = (y > 0.02) & (y < 0.98) & (p > 0.02) & (p < 0.98)
    if mid.sum() < 3:
        return {"seed_sd": SEED_SD_PRIOR, "cell_sd": 0.0, "seed_measured": False}
    logit = np.log(y[mid] / (1 - y[mid]))
    total = float(np.mean((logit - z[mid]) ** 2))
    cols = [np.round(lf[mid], 6), np.round(lx[mid] / SAME_SIZE)]
    if lt is not None:
        cols.append(np.round(lt[mid], 4))
    config = np.unique(np.column_stack(cols), axis=0, return_inverse=True)[1].ravel()
    counts = np.bincount(config)
    repeated = counts[config] >= 2
    if repeated.sum() < 3:
        return {"seed_sd": SEED_SD_PRIOR, "cell_sd": math.sqrt(total), "seed_measured": False}
    means = np.bincount(config, weights=logit) / counts
    dev = (logit - means[config])[repeated]
    seed = float(np.sum(dev ** 2) / max(repeated.sum() - len(np.unique(config[repeated])), 1))
    return {"seed_sd": math.sqrt(seed), "cell_sd": math.sqrt(max(total - seed, 0.0)), "seed_measured": True}


def _curve(stage1: Stage1, degree: int) -> Curve:
    """Weighted least squares of theta on powers of log size, with DerSimonian-Laird misfit."""
    known = np.isfinite(stage1.theta_se)
    x, theta, se = stage1.x[known], stage1.theta[known], np.maximum(stage1.theta_se[known], 1e-6)
    x0 = float(np.average(x, weights=1 / se ** 2))
    design = np.stack([(x - x0) ** j for j in range(degree + 1)], 1)
    df = len(x) - design.shape[1]

    def wls(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        inv = np.linalg.pinv((design * w[:, None]).T @ design)
        coef = inv @ (design * w[:, None]).T @ theta
        return coef, inv, theta - design @ coef

    w = 1 / se ** 2
    coef, inv, resid = wls(w)
    q = float(np.sum(w * resid ** 2))
    tau2 = TAU_PRIOR ** 2  # no degree of freedom left to measure it: assumed
    if df >= 1:
        hat = np.trace(inv @ (design * (w * w)[:, None]).T @ design)
        tau2 = max(0.0, (q - df) / max(w.sum() - hat, 1e-12))
    w_star = 1 / (se ** 2 + tau2)
    coef, inv, resid = wls(w_star)
    scale = max(1.0, float(np.sum(w_star * resid ** 2)) / df) if df >= 1 else 1.0
    return Curve(degree=degree, x0=x0, coef=coef, cov=inv * scale, tau=math.sqrt(tau2), df=df,
                 span=(float(x.min()), float(x.max())), q=q, assumed=df < 1)


# ---------------------------------------------------------------------------------------------
# Draws


@dataclass
class Draws:
    """Joint draws of everything a prediction needs; row m of each array is one draw."""

    k: np.ndarray
    """(M, 2): k at the mean log size, and its slope in log size."""
    bt: np.ndarray
    within: np.ndarray
    theta: np.ndarray
    """(M, bins) thresholds of the recorded sizes; NaN for a size with no trial near its threshold."""
    curve: np.ndarray | None
    misfit: np.ndarray
    cell: np.ndarray
    seed: np.ndarray


def draw(law: Law, m: int, rng: np.random.Generator) -> Draws:
    s1, curve = law.stage1, law.curve
    chol_k = np.linalg.cholesky(s1.k_cov + 1e-12 * np.eye(2))
    k = np.array([s1.k, s1.k_slope]) + rng.standard_normal((m, 2)) @ chol_k.T
    # A size with no trial near its threshold has no draws of its own (NaN): the ridge, not the
    # data, placed it. The curve stands in for it where there is one; where there is none, every
    # prediction resting on it has no interval (a draw equal to the ridge's value would give it
    # one of zero width).
    placed = np.isfinite(s1.theta_se)
    theta = np.where(placed, s1.theta + np.where(placed, s1.theta_se, 0.0) * rng.standard_normal(
        (m, len(s1.theta))), np.nan)
    coef, misfit = None, np.zeros(m)
    if curve is not None:
        scale = np.sqrt(curve.df / rng.chisquare(curve.df, m)) if curve.df >= 1 else np.ones(m)
        chol = np.linalg.cholesky(curve.cov + 1e-12 * np.eye(len(curve.coef)))
        coef = curve.coef + scale[:, None] * (rng.standard_normal((m, len(curve.coef))) @ chol.T)
        misfit = scale * curve.tau * rng.standard_normal(m)
    return Draws(k=k, bt=s1.bt + s1.bt_se * rng.standard_normal(m),
                 within=s1.within + s1.within_se * rng.standard_normal(m), theta=theta,
                 curve=coef, misfit=misfit, cell=s1.cell_sd * rng.standard_normal(m),
                 seed=s1.seed_sd * rng.standard_normal(m))


def log_threshold(law: Law, lx: np.ndarray, lt: np.ndarray, draws: Draws | None = None) -> np.ndarray:
    """log f_thres at log sizes ``lx`` and log tokens ``lt`` (broadcast): the estimate, or
    (M, points) draws. A recorded size (discrete bins) uses its own threshold; any other size
    the curve, with the misfit."""
    s1 = law.stage1
    lx, lt = np.broadcast_arrays(np.asarray(lx, dtype=float), np.asarray(lt, dtype=float))
    lx, lt = lx.ravel(), lt.ravel()
    recorded = own_bin(law, lx)
    if draws is None:
        theta = np.where(recorded >= 0, s1.theta[np.maximum(recorded, 0)],
                         law.curve.at(lx) if law.curve is not None else s1.theta[0])
        if not s1.discrete and law.curve is None:
            theta = theta + s1.within * (lx - s1.x[0])
        return theta - s1.bt / k_at(s1, lx) * (lt - s1.mean_lt)
    own = draws.theta[:, np.maximum(recorded, 0)]
    if law.curve is not None:
        other = law.curve.at(lx, draws.curve) + draws.misfit[:, None]
    else:
        other = own + draws.within[:, None] * (lx - s1.x[0])
    theta = np.where(recorded >= 0, own, other)
    return theta - draws.bt[:, None] / k_at(s1, lx, draws) * (lt - s1.mean_lt)


def own_bin(law: Law, lx: np.ndarray) -> np.ndarray:
    """The bin whose own threshold answers at each log size ``lx``, or -1 where the curve does.
    A recorded size (discrete bins) has its own unless no trial sits near it and a curve
    stands in; without a curve, continuous sizes have only the one bin."""
    s1 = law.stage1
    lx = np.ravel(np.asarray(lx, dtype=float))
    recorded = np.full(len(lx), -1)
    if s1.discrete:
        near = np.abs(lx[:, None] - s1.x[None, :])
        hit = near.min(1) <= SAME_SIZE
        if law.curve is not None:  # a size with no trial near its threshold takes the curve's
            hit &= np.isfinite(s1.theta_se[near.argmin(1)])
        recorded[hit] = near.argmin(1)[hit]
    elif law.curve is None:  # continuous sizes need the curve; one bin has only its own
        recorded[:] = 0
    return recorded


def k_at(s1: Stage1, lx: np.ndarray, draws: Draws | None = None) -> np.ndarray:
    """The logistic slope at log sizes ``lx``: (points,), or (M, points) draws; never below a
    fifth of the fitted ``k`` (a draw's slope would otherwise turn the curve over far out)."""
    dx = np.clip(np.ravel(np.asarray(lx, dtype=float)), *s1.span) - s1.mx
    if draws is None:
        return np.maximum(s1.k + s1.k_slope * dx, 0.2 * s1.k)
    return np.maximum(draws.k[:, :1] + draws.k[:, 1:] * dx[None, :], 0.2 * s1.k)


# ---------------------------------------------------------------------------------------------
# Small helpers


def chi2_sf(q: float, df: int) -> float:
    """P(chi-square with ``df`` degrees of freedom > q), Wilson-Hilferty (good to ~1e-3)."""
    if q <= 0:
        return 1.0
    a = 2.0 / (9.0 * df)
    zscore = ((q / df) ** (1 / 3) - (1 - a)) / math.sqrt(a)
    return 0.5 * math.erfc(zscore / math.sqrt(2))
