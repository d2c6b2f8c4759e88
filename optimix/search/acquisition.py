"""What a candidate is worth to the frontier sampler (``frontier_sampler``): its expected
2-D hypervolume gain under a Gaussian prediction of its quality, and its chance of meeting
the outcome constraints. Pure numpy."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

from optimix.search.gp import GP

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(16)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()
_NORMAL_CDF = np.vectorize(NormalDist().cdf)


def feasibility(constraints: Sequence[GP], at: np.ndarray) -> np.ndarray:
    """The probability that each point of ``at`` meets every constraint, one GP per constraint
    over its values (<= 0 met), as in constrained expected improvement (Gardner et al. 2014);
    1 without constraints."""
    p = np.ones(len(at))
    for model in constraints:
        mean, sd = model.predict(at)
        p *= _NORMAL_CDF(-mean / np.maximum(sd, 1e-9))
    return p


def expected_gain(mean: np.ndarray, sd: np.ndarray, log_cost: np.ndarray,
                  front: Sequence[tuple[float, float]], reference: float,
                  ceiling: float = math.inf, inverse: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Expected 2-D hypervolume gain of adding (quality ~ N(mean, sd), log_cost) to ``front``.

    Quality is maximised (the caller flips signs), log cost minimised, and the area is
    bounded by quality ``floor`` and log cost ``reference``. The floor is 0, or the front's
    lowest quality where that is below 0 (a minimised metric, its sign flipped): never a
    candidate's, so that a candidate's gain does not depend on what it is scored beside. A
    quality cannot pass ``ceiling`` (an accuracy's 1): the GP's tail above it is no gain.
    ``inverse`` maps the modelled quality back to the front's scale (``gp.HalfRank``).
    """
    quality = mean[:, None] + sd[:, None] * _NODES[None, :]  # (n, nodes)
    if inverse is not None:
        quality = inverse(quality)
    floor = min([0.0, *(q for _, q in front)])
    # The current staircase: best quality at cost <= u, for u along the log-cost axis.
    pts = sorted(front)
    edges, best, level = [], [], floor
    for lc, height in pts:
        if height > level:
            edges.append(lc)
            best.append(level)
            level = height
    edges.append(reference)
    best.append(level)
    starts = np.array([-np.inf, *edges[:-1]])  # segment k: [starts[k], edges[k]) at height best[k]
    ends = np.array(edges)
    heights = np.array(best)
    quality = np.minimum(quality, ceiling)
    width = np.clip(ends[None, :] - np.maximum(starts[None, :], log_cost[:, None]), 0.0, None)  # (n, k)
    lift = np.clip(quality[:, :, None] - heights[None, None, :], 0.0, None)  # (n, nodes, k)
    return (lift * width[:, None, :]).sum(axis=2) @ _WEIGHTS
