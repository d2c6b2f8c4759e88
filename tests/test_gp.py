"""optimix/search/gp.py: the frontier sampler's GP (a length scale per dimension) and its
output warping."""

from __future__ import annotations

import numpy as np
import pytest

from optimix.search import gp as G


def test_the_gradient_of_the_log_posterior_is_exact():
    rng = np.random.default_rng(1)
    x = rng.random((30, 4))
    y = np.sin(6 * x[:, 0]) + 0.3 * x[:, 1]
    d2 = G._per_group(x, x, np.array([0, 1, 2, 2]))  # the last two columns are one dimension
    z, known = (y - y.mean()) / y.std(), np.full(30, 0.01)
    theta = np.array([-1.0, 0.3, 0.5, 0.2, -3.0])
    _, grad = G.neg_log_posterior(theta, d2, z, known, 0.0)
    step = 1e-6
    numeric = [(G.neg_log_posterior(theta + e, d2, z, known, 0.0, False)
                - G.neg_log_posterior(theta - e, d2, z, known, 0.0, False)) / (2 * step) for e in np.eye(5) * step]
    assert grad == pytest.approx(numeric, rel=1e-4, abs=1e-6)


def test_a_dimension_that_does_not_matter_gets_a_long_length_scale_and_predictions_hold_out():
    rng = np.random.default_rng(0)
    x = rng.random((60, 5))
    truth = lambda a: np.sin(6 * a[:, 0]) + 0.3 * a[:, 1]  # noqa: E731
    gp = G.GP.fit(x, truth(x) + 0.05 * rng.standard_normal(60))
    assert gp.scales[0] < 0.6 and min(gp.scales[2:]) > 3 * gp.scales[0]
    held_out = rng.random((400, 5))  # points the fit never saw
    mean, sd = gp.predict(held_out)
    error = mean - truth(held_out)
    assert np.sqrt(np.mean(error ** 2)) < 0.1
    assert 0.5 < np.mean(np.abs(error) < 2 * sd)  # the spread is not blind to its errors


def test_a_large_fit_uses_a_subset_and_the_gp_conditions_on_every_point():
    rng = np.random.default_rng(2)
    n = G.FIT_POINTS + 150
    x = rng.random((n, 3))
    truth = lambda a: np.sin(6 * a[:, 0]) + 0.3 * a[:, 1]  # noqa: E731
    y = truth(x) + 0.05 * rng.standard_normal(n)
    gp = G.GP.fit(x, y)
    assert len(gp.x) == n and gp.scales[0] < 0.6 and gp.scales[2] > 3 * gp.scales[0]
    assert G.GP.fit(x, y).theta == pytest.approx(gp.theta)  # the subset is seeded: the same fit
    held_out = rng.random((300, 3))
    assert np.sqrt(np.mean((gp.predict(held_out)[0] - truth(held_out)) ** 2)) < 0.05
    # Held hyperparameters: the same GP as the fit that found them, and new points are heard
    same = G.GP.at(gp.theta, x, y)
    assert same.predict(held_out)[0] == pytest.approx(gp.predict(held_out)[0], abs=1e-9)
    far = np.array([[0.95, 0.95, 0.5]])
    moved = G.GP.at(gp.theta, np.vstack([x, far]), np.append(y, 5.0))
    assert moved.predict(far)[0][0] > gp.predict(far)[0][0] + 0.3
    # A start from an earlier fit is taken only where it is better than the grid's best
    restarted = G.GP.fit(x[:120], y[:120], start=gp.theta)
    assert restarted.scales[0] < 0.6


def test_half_rank_keeps_the_upper_half_and_pulls_in_the_failures():
    y = np.array([0.1, 0.35, 0.58, 0.8, 0.84, 0.85, 0.86, 0.87, 0.88, 0.9])
    warp = G.HalfRank(y)
    z = warp(y)
    assert np.all(z[y >= np.median(y)] == y[y >= np.median(y)])  # identity at and above the median
    assert np.all(np.diff(z) > 0) and z.min() > 0.7  # monotone; 0.1 no longer sets the scale
    assert warp.inverse(z) == pytest.approx(y)
    grid = np.linspace(-1, 1.2, 50)
    assert np.all(np.diff(warp.inverse(grid)) > 0)  # inverse monotone beyond the data too
    flat = np.array([0.0, 0.0, 0.0, 0.01])  # most trials at 0: nothing below the median to move
    assert G.HalfRank(flat)(flat) == pytest.approx(flat)
