"""The frontier sampler: the point with the largest expected frontier gain per FLOP.

optimix's objectives are usually one quality metric (a rare task's accuracy) and training
FLOPs. The FLOPs of a point are known before it runs (``search.trial_flops``), so only the
quality needs a model, and a proposal can be priced before it is made. A budget-bound
search should spend its FLOPs where the frontier gains most per FLOP, which is what this
sampler proposes (cost-aware Bayesian optimisation, as in Snoek et al. 2012's "expected
improvement per second", with the 2-D hypervolume in place of the improvement):

1. a Gaussian process (``gp.GP``: Matern-5/2, a length scale fitted per dimension) over the
   space's dimensions (scaled to [0, 1], log scale where the dimension is, numeric choices by
   value) models the quality of finished configs (a pruned trial's by its last learning-curve
   point), each point as its trial builds it (``built``: a ``model.params`` target at the
   parameters of the model built, so two targets that build one model are one size); a config
   retrained at several seeds is one point at its seeds' mean, its seed variance over n added
   to the GP's noise (heteroscedastic); past 200 configs its length scales are refitted only
   as the configs grow by a tenth (``REFIT``), so a search of hundreds of trials stays fast;
2. for each of a few hundred candidate points (random, near the best points so far, then
   hill-climbed from the best-scoring ones, as GPSampler searches its acquisition), the
   expected hypervolume gain of adding its (quality, log10 FLOPs) point to the current
   frontier (curve points included) is integrated over the GP's prediction (Gauss-Hermite)
   and over draws of its posterior at the configs trained (a noisy frontier, as in qNEHVI).
   The GP's mean at a candidate is never below its mean, at the candidate's other settings,
   of a smaller model already trained (at fixed tokens a larger model does no worse: Kaplan
   et al. 2020, arXiv:2001.08361; a size seen only at poor frequencies would otherwise be
   predicted at the mean of what was seen); not where trials train to a FLOPs target
   (``train.flops``), where a larger model gets fewer tokens (docs/benchmarks/collapse.md);
3. the candidate with the largest gain per price**alpha that fits the budget left is
   proposed. Its price is its FLOPs, but never less than the budget left over the trials the
   search may still run (``search.trials``): below that share the trials run out first and a
   FLOP saved buys nothing. alpha falls from 1 to 0 as the budget is spent ("cost cooling",
   Lee et al. 2020): a fresh search buys cheap information, and once the frontier stops
   moving cheaply, what a dearer point could add is worth its price. Candidates are whole
   effective configs (``budget.effective_key``): one that would train a model already
   trained or running is never proposed, nor a near-repeat (the same model built, every
   other dimension within ``NEAR``); the GP's prior spread never falls below ``prior_sd``;
   an accuracy is never expected above 1.

Running trials count as finished at the GP's mean (the "kriging believer"), so parallel
slots do not propose the same point. Until ``n_startup`` trials have finished, and for
anything it cannot model, Optuna's random sampler proposes instead. Pure numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from optimix.core import replicates
from optimix.core.config import TrialConfig
from optimix.core.metrics import CONSTRAINT_ATTR, CURVE_ATTR
from optimix.core.space import Dimension
from optimix.search.acquisition import expected_gain, feasibility
from optimix.search.gp import GP, HalfRank

NEAR = 0.02  # a candidate this close to a tried point in every scaled dimension is a near-repeat
REFIT = (200, 1.1)  # from this many configs, the GP's hyperparameters are refitted once they grow by this factor


class FrontierSampler(optuna.samplers.BaseSampler):
    """Optuna sampler for (one quality objective, ``train_flops:min``) with a known cost.

    ``dimensions`` are the space's, ``distributions`` the same in Optuna's terms
    (``search.proposals.distributions``); candidates are drawn with ``Dimension.at``.
    ``cost(point) -> FLOPs`` prices a point (``math.inf`` for an invalid one);
    ``budget_left() -> FLOPs`` bounds what may be proposed; ``budget_limit`` and ``n_trials``
    (the trials the search expects) set the cost cooling, ``budget_limit`` and ``max_trials``
    (the most it may run, ``search.trials``) the price floor.
    ``key(point)`` names what a point trains (``budget.effective_key``), ``built(point)`` is
    the point as its trial builds it (``Proposals.built``) and ``size(point)`` the parameters
    of the model it builds (``Proposals.size``; ``nan``: unknown).
    """

    def __init__(self, dimensions: Mapping[str, Dimension], distributions: Mapping[str, BaseDistribution],
                 quality_index: int, maximize: bool, cost: Callable[[dict[str, Any]], float],
                 budget_left: Callable[[], float] = lambda: math.inf,
                 n_startup: int = 3, n_candidates: int = 384, seed: int | None = None,
                 key: Callable[[dict[str, Any]], str | None] = lambda p: None,
                 built: Callable[[dict[str, Any]], dict[str, Any]] = dict,
                 size: Callable[[dict[str, Any]], float] = lambda p: math.nan,
                 budget_limit: float | None = None, n_trials: int = 100, max_trials: int | None = None,
                 prior_sd: float = 0.1,
                 ceiling: float = math.inf, constraints: int = 0):
        if list(dimensions) != list(distributions):
            raise ValueError("the dimensions and the distributions must name the same entries")
        self._dims = dict(dimensions)
        self._dists = dict(distributions)
        self._q = quality_index
        self._sign = 1.0 if maximize else -1.0
        self._cost = cost
        self.budget_left = budget_left
        self._n_startup = n_startup
        self._n_candidates = n_candidates
        self._key = key
        self._built = built
        self._size = size
        self._model_columns = self._columns([n for n in dimensions if TrialConfig.meaning(n).as_shape])
        self._groups = np.concatenate([np.full(int(self._columns([n]).sum()), k) for k, n in enumerate(dimensions)])
        self.budget_limit = budget_limit
        self._n_trials = n_trials
        self._max_trials = max_trials
        self._prior_sd = prior_sd
        self._ceiling = ceiling if maximize else math.inf
        self._constraints = constraints
        self._rng = np.random.default_rng(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._fitted: tuple[int, np.ndarray] | None = None  # (configs, GP.theta) of the last fit

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return dict(self._dists)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        if not search_space:
            return {}
        acq = self.acquisition(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                          TrialState.RUNNING)))
        if acq is None:
            return {}
        candidates, score = self._score(self._new_configs(self._candidates(acq.seen), acq), acq)
        candidates, score = self._climb(candidates, score, acq)
        if not (score > 0).any():
            return {}
        return candidates[int(np.argmax(score))]

    def acquisition(self, trials: Sequence[FrozenTrial]) -> _Acquisition | None:
        """What scoring candidates needs, from the study's finished and running trials (steps 1
        and 2 of the module's docstring); ``None`` before ``n_startup`` trials have finished."""
        done = [t for t in trials if _quality(t, self._q) is not None]
        if len(done) < self._n_startup:
            return None
        names = list(self._dims)
        seen = _by_config(done, self._q, self._sign)
        x = np.array([self._encode(g.params) for g in seen])
        y = np.array([g.mean for g in seen])
        warp = HalfRank(y)  # the GP models warped values; gains are read back through warp.inverse
        gp = self._quality_gp(x, warp(y), _seed_noise(seen))
        finished = [t for t in trials if t.state != TrialState.RUNNING and _met(t, self._constraints)]
        running = [t for t in trials if t.state == TrialState.RUNNING and set(names) <= set(t.params)]
        fronts = self._noisy_fronts(gp, warp, [g for g in seen if _met(g.trials[0], self._constraints)],
                                    _curve_means(finished, self._sign), running)
        tried = [t.params for t in trials if set(names) <= set(t.params)]  # trained or training
        return _Acquisition(gp, warp, fronts, seen, self._constraint_models(done), {self._key(p) for p in tried},
                            np.array([self._encode(p) for p in tried]) if tried else np.zeros((0, 0)),
                            self.cost_weight(len(done)),
                            None if self._max_trials is None else self._max_trials - len(tried))

    def _quality_gp(self, x: np.ndarray, z: np.ndarray, noise: np.ndarray) -> GP:
        """The quality GP: fitted at every proposal below ``REFIT[0]`` configs; from there, only
        once the configs have grown by ``REFIT[1]`` since the last fit (starting from its
        hyperparameters), and conditioned on the new points with the last fit's in between.
        A fit's optimiser factorises the kernel matrix at each step, and a few more points
        barely move the length scales; a search of several hundred trials would otherwise
        spend most of its proposal time fitting."""
        n = len(x)
        last = self._fitted
        if last is not None and REFIT[0] <= n < REFIT[1] * last[0]:
            return GP.at(last[1], x, z, self._prior_sd, noise, self._groups)
        gp = GP.fit(x, z, self._prior_sd, noise, self._groups, start=None if n < REFIT[0] or last is None else last[1])
        self._fitted = (n, gp.theta)
        return gp

    def _score(self, candidates: list[dict[str, Any]], acq: _Acquisition) -> tuple[list[dict[str, Any]], np.ndarray]:
        """The candidates that fit the budget left, each with its expected frontier gain
        (times the chance it meets the constraints) over its price**alpha (steps 2 and 3)."""
        costs = np.array([self._cost(c) for c in candidates])
        fits = np.isfinite(costs) & (costs <= self.budget_left()) if candidates else np.zeros(0, dtype=bool)
        candidates = [c for c, ok in zip(candidates, fits, strict=True) if ok]
        if not candidates:
            return [], np.zeros(0)
        costs = costs[fits]
        encoded = np.array([self._encode(c) for c in candidates])
        mean, sd = acq.gp.predict(encoded)
        mean = np.maximum(mean, self._smaller_models(acq.gp, encoded, [self._size(c) for c in candidates], acq.seen))
        if acq.reference is None:  # fixed by the first pool, so that later scores compare
            acq.reference = math.log10(max([float(costs.max()), *(10 ** p[0] for f in acq.fronts for p in f)])
                                       * 1.0001)
        gain = np.mean([expected_gain(mean, sd, np.log10(costs), f, acq.reference, self._ceiling, acq.warp.inverse)
                        for f in acq.fronts], axis=0)
        return candidates, gain * feasibility(acq.constraints, encoded) / self.price(costs, acq.n_left) ** acq.alpha

    def _climb(self, candidates: list[dict[str, Any]], score: np.ndarray, acq: _Acquisition,
               starts: int = 4, rounds: int = 4) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Hill-climb the score from the ``starts`` best candidates, one dimension changed at
        a time (``_neighbours``): a few hundred random draws seldom hold a categorical space's best."""
        out, scores = list(candidates), list(score)
        for i in np.argsort(-score)[:starts]:
            point, best = candidates[int(i)], float(score[int(i)])
            for _ in range(rounds):
                steps, values = self._score(self._new_configs(self._neighbours(point), acq), acq)
                if not len(values) or values.max() <= best:
                    break
                point, best = steps[int(np.argmax(values))], float(values.max())
                out.append(point)
                scores.append(best)
        return out, np.array(scores)

    def _neighbours(self, point: dict[str, Any]) -> list[dict[str, Any]]:
        """``point`` with one dimension changed: to each other value of a choice, or nearby along a range."""
        out = []
        for name, dim in self._dims.items():
            if dim.dist == "choice":
                out += [{**point, name: v} for v in dim.values if v != point[name]]
            else:
                u = dim.unit(point[name])
                out += [{**point, name: dim.at(min(1.0, max(0.0, u + d)))} for d in (-0.1, -0.03, 0.03, 0.1)]
        return out

    def _noisy_fronts(self, gp: GP, warp: HalfRank, seen: Sequence[_Config], curve: list[tuple[float, float]],
                      running: Sequence[FrozenTrial], draws: int = 8) -> list[list[tuple[float, float]]]:
        """The frontier the gain is measured against, as draws from the GP's posterior at the
        configs already trained (their final results are noisy: a config's mean over its seeds
        is not its quality), as BoTorch's qNEHVI integrates over the observed points; each
        draw with the configs' learning-curve points (means over their seeds) and the running
        trials at the GP's mean (the kriging believer). Where seed noise is negligible the
        draws are the values."""
        priced = [(t.params, self._cost(t.params)) for t in running]
        priced = [(p, c) for p, c in priced if math.isfinite(c)]
        believed = ([] if not priced else list(zip(
            [math.log10(c) for _, c in priced],
            warp.inverse(gp.predict(np.array([self._encode(p) for p, _ in priced]))[0]).tolist(), strict=True)))
        costs = [self._cost(g.params) for g in seen]
        keep = [i for i, c in enumerate(costs) if math.isfinite(c)]
        if not keep:
            return [curve + believed]
        mean, cov = gp.posterior(np.array([self._encode(seen[i].params) for i in keep]))
        sample = self._rng.multivariate_normal(mean, cov + 1e-12 * np.eye(len(keep)), size=draws,
                                               check_valid="ignore", method="eigh")
        lc = [math.log10(costs[i]) for i in keep]
        return [curve + believed + list(zip(lc, warp.inverse(row).tolist(), strict=True)) for row in sample]

    def _constraint_models(self, done: Sequence[FrozenTrial]) -> list[GP]:
        """A GP per outcome constraint over the values ``searcher.tell`` stored (<= 0 met),
        whose chance of a candidate meeting it weighs its gain, as in constrained expected
        improvement (Gardner et al. 2014); none without constraints."""
        rows = [t for t in done if CONSTRAINT_ATTR in t.user_attrs]
        if not self._constraints or len(rows) < 2:
            return []
        x = np.array([self._encode(t.params) for t in rows])
        values = np.clip(np.array([t.user_attrs[CONSTRAINT_ATTR] for t in rows], dtype=float), -1e6, 1e6)
        return [GP.fit(x, values[:, k], 1e-3, groups=self._groups) for k in range(values.shape[1])]

    def cost_weight(self, n_done: int) -> float:
        """alpha in gain / FLOPs**alpha: the share of the budget left (of the trials, without a
        FLOPs budget), from 1 at the start to 0 at the end."""
        if self.budget_limit:
            return min(1.0, max(0.0, self.budget_left() / self.budget_limit))
        return min(1.0, max(0.0, 1.0 - n_done / max(1, self._n_trials)))

    def _smaller_models(self, gp: GP, encoded: np.ndarray, sizes: Sequence[float],
                        seen: Sequence[_Config]) -> np.ndarray:
        """The best the GP expects, at each candidate's other settings, of a smaller model
        already trained (the floor of step 2 in the module's docstring); ``-inf`` where no
        smaller model was trained, or sizes do not compare (``size`` is ``nan``)."""
        out = np.full(len(encoded), -np.inf)
        if not self._model_columns.any():
            return out
        sizes = np.asarray(sizes, dtype=float)
        models = {}
        for g in seen:
            size = self._size(g.params)
            if math.isfinite(size):
                models[size] = np.array(self._encode(g.params))[self._model_columns]
        for size, columns in models.items():
            smaller = sizes > size
            if not smaller.any():
                continue
            at = encoded[smaller].copy()
            at[:, self._model_columns] = columns
            out[smaller] = np.maximum(out[smaller], gp.predict(at)[0])
        return out

    def price(self, costs: np.ndarray, n_left: int | None) -> np.ndarray:
        """What a candidate uses of what the search has left, in FLOPs: its cost, but never
        less than the budget left over the ``n_left`` trials it may still run (step 3 in the
        module's docstring); without a FLOPs budget or a trial limit, its cost."""
        if not self.budget_limit or n_left is None:
            return costs
        return np.maximum(costs, self.budget_left() / max(1, n_left))

    def _new_configs(self, candidates: list[dict[str, Any]], acq: _Acquisition) -> list[dict[str, Any]]:
        """One candidate per effective config, none that a trial trained or is training, and
        none a near-repeat of one (every dimension of what it builds within ``NEAR`` of its
        range: the same model, at nearly the same frequency and settings, whatever size it
        proposed; a deterministic trial there would mostly retell what its neighbour said)."""
        seen, near = set(acq.tried_keys), acq.tried_x
        out = []
        for c in candidates:
            k = self._key(c)
            if k is not None and k in seen:
                continue
            if len(near) and (np.abs(near - np.array(self._encode(c))).max(axis=1) < NEAR).any():
                continue
            out.append(c)
            if k is not None:
                seen.add(k)
        return out

    # -- points ---------------------------------------------------------------------------

    def _candidates(self, seen: Sequence[_Config]) -> list[dict[str, Any]]:
        out = [self._draw() for _ in range(self._n_candidates)]
        best = [seen[int(i)].params for i in np.argsort([-g.mean for g in seen])[:4]]
        for params in best:  # and near the best so far: one dimension changed at a time
            for name, dim in self._dims.items():
                values = dim.values if dim.dist == "choice" else [self._draw()[name] for _ in range(8)]
                out += [{**params, name: v} for v in values]
        return out

    def _draw(self) -> dict[str, Any]:
        return {name: dim.at(float(self._rng.random())) for name, dim in self._dims.items()}

    def _columns(self, names: Sequence[str]) -> np.ndarray:
        """Which of the GP's input columns (``_encode``) hold the dimensions ``names``."""
        out = []
        for name, dim in self._dims.items():
            out += [name in names] * (1 if dim.dist != "choice" or _positive(dim.values) else len(dim.values))
        return np.array(out, dtype=bool)

    def _encode(self, params: dict[str, Any]) -> list[float]:
        """A point as GP inputs, as its trial builds it (``built``: a ``model.params`` target
        at the parameters of the model built): each range dimension at its place in [0, 1]
        (``Dimension.unit``), a choice of positive numbers by its value in log scale, any
        other choice one-hot."""
        params = self._built(params)
        row = []
        for name, dim in self._dims.items():
            value = params[name]
            if dim.dist != "choice":
                row.append(dim.unit(value))
            elif _positive(dim.values):
                low, high = math.log(min(dim.values)), math.log(max(dim.values))
                row.append((math.log(value) - low) / (high - low) if high > low else 0.5)
            else:
                row += [1.0 if value == c else 0.0 for c in dim.values]
        return row


def _positive(values: Sequence[Any]) -> bool:
    """Whether a choice's values are positive numbers (encoded by value, in log scale)."""
    return all(isinstance(c, int | float) and not isinstance(c, bool) and c > 0 for c in values)


def _quality(trial: FrozenTrial, q: int) -> float | None:
    """What a finished trial says about its point's quality: a complete trial's value; a
    pruned one's last learning-curve point (it was stopped there as not worth finishing, and
    a model that never sees it would keep proposing its neighbours)."""
    if trial.state == TrialState.COMPLETE and trial.values is not None:
        return float(trial.values[q])
    if trial.state == TrialState.PRUNED and trial.user_attrs.get(CURVE_ATTR):
        return float(trial.user_attrs[CURVE_ATTR][-1][1])
    return None


def _met(trial: FrozenTrial, constraints: int) -> bool:
    """Whether a finished trial met the outcome constraints (one that stored no values, a
    pruned trial, is not known to have met them)."""
    if not constraints:
        return True
    values = trial.user_attrs.get(CONSTRAINT_ATTR)
    return values is not None and all(v <= 0 for v in values)


@dataclass
class _Acquisition:
    """What scoring a candidate needs (``FrontierSampler._score``), fixed for one proposal."""

    gp: GP
    warp: HalfRank
    fronts: list[list[tuple[float, float]]]
    seen: Sequence[_Config]
    constraints: list[GP]
    tried_keys: set[str | None]
    """The effective configs trained or training (``budget.effective_key``)."""
    tried_x: np.ndarray
    """Those configs as GP inputs (``_encode``), for the near-repeat test."""
    alpha: float
    n_left: int | None
    reference: float | None = None


@dataclass
class _Config:
    """The finished trials of one config (its seeds: replicates share the params)."""

    params: dict[str, Any]
    trials: list[FrozenTrial]
    values: list[float]
    """Quality x sign at each seed."""

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


def _by_config(done: Sequence[FrozenTrial], q: int, sign: float) -> list[_Config]:
    """Finished trials grouped by their params: replicates are one point, at their mean."""
    groups: dict[str, _Config] = {}
    for t in done:
        key = json.dumps(t.params, sort_keys=True, default=str)
        group = groups.setdefault(key, _Config(dict(t.params), [], []))
        group.trials.append(t)
        group.values.append(sign * _quality(t, q))
    return list(groups.values())


def _seed_noise(seen: Sequence[_Config]) -> np.ndarray:
    """Each config's mean's seed variance (heteroscedastic): its own seeds' spread shrunk
    toward the spread pooled over configs with several seeds, over its number of seeds; 0
    where no config has two seeds (nothing measured: the GP's fitted noise stands)."""
    pooled = replicates.pooled_sd(g.values for g in seen)
    if pooled is None:
        return np.zeros(len(seen))
    out = []
    for g in seen:
        n, mean = len(g.values), g.mean
        ss = sum((v - mean) ** 2 for v in g.values)
        var = (ss + replicates.PRIOR_DF * pooled ** 2) / (n - 1 + replicates.PRIOR_DF)
        out.append(var / n)
    return np.array(out)


def _curve_means(done: Sequence[FrozenTrial], sign: float) -> list[tuple[float, float]]:
    """(log10 FLOPs, quality x sign) of the finished trials' learning-curve points before
    their final result (``CURVE_ATTR``), averaged over a config's seeds at each point."""
    points: dict[tuple[str, float], list[float]] = {}
    for t in done:
        key = json.dumps(t.params, sort_keys=True, default=str)
        for lf, v in t.user_attrs.get(CURVE_ATTR, [])[:-1]:
            points.setdefault((key, round(float(lf), 9)), []).append(sign * float(v))
    return [(lf, float(np.mean(vs))) for (_, lf), vs in points.items()]
