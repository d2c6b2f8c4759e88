"""Search dimensions in Optuna's terms: distributions, grid points, first points, samplers;
and points priced as proposals.

The one place that turns a space's dimensions into what Optuna proposes from, and what
Optuna is told back (``optuna_value``); the one place the search prices a point
(``propose``: ``optimix.core.budget`` with the tasks' geometry the trial side measures).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from optimix.core import budget, metrics
from optimix.core.budget import Proposal
from optimix.core.config import SpaceError, TrialConfig
from optimix.core.metrics import MIN_FLOPS
from optimix.core.space import Dimension, Space
from optimix.trial.train import task_geometry


def propose(space: Space, point: Mapping[str, Any], seed: int | None = None) -> Proposal:
    """The trial at ``point`` (at ``seed``: a replicate), built and priced once
    (``budget.propose``); ``SpaceError`` if its config cannot be built."""
    return budget.propose(space, point, task_geometry, seed)


class Proposals:
    """Every point a search prices, built once (``propose``) and kept by point: the searcher,
    the frontier sampler and the driver share one."""

    def __init__(self, space: Space):
        self.space = space
        self._built: dict[str, Proposal | str] = {}  # a point's proposal, or why it cannot be built

    def get(self, point: Mapping[str, Any], seed: int | None = None) -> Proposal:
        """The proposal at ``point`` (at ``seed``: a replicate); ``SpaceError`` if its config
        cannot be built."""
        found = self._lookup(point, seed)
        if isinstance(found, str):
            raise SpaceError(found)
        return found

    def feasible(self, point: Mapping[str, Any]) -> bool:
        return not isinstance(self._lookup(point), str)

    def cost(self, point: Mapping[str, Any]) -> float:
        """Training FLOPs at ``point``; ``inf`` where its config cannot be built."""
        found = self._lookup(point)
        return math.inf if isinstance(found, str) else found.cost

    def key(self, point: Mapping[str, Any], seed: int | None = None) -> str:
        """What the trial at ``point`` (at ``seed``) trains (``Proposal.key``); for a point
        whose config cannot be built, the point itself."""
        found = self._lookup(point, seed)
        return "infeasible:" + _point_text(point) if isinstance(found, str) else found.key

    def size(self, point: Mapping[str, Any]) -> float:
        """Parameters of the model the trial at ``point`` builds, where sizes compare at its
        other settings; ``nan`` where its config cannot be built, or trains to a FLOPs target
        (``train.flops``: a larger model then gets fewer tokens, and may well do worse)."""
        found = self._lookup(point)
        if isinstance(found, str) or found.config.train.flops is not None:
            return math.nan
        return float(found.plan.shape.params)

    def built(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """``point`` with each model entry (``FieldMeaning.as_shape``) at the shape its trial
        builds: a ``model.params`` target at the parameters of the model the rule builds for
        it, so two targets that build one model are one size. Other entries are left as
        proposed (their quantum, ``Dimension.quantum``, is the key's to judge: rounded here,
        two frequencies a quantum apart would never be near). A point whose config cannot be
        built is itself."""
        found = self._lookup(point)
        if isinstance(found, str):
            return dict(point)
        shape = found.plan.shape
        out = dict(point)
        for key in point:
            name = key.rsplit(".", 1)[-1]
            if TrialConfig.meaning(key).as_shape and hasattr(shape, name):
                out[key] = getattr(shape, name)
        return out

    def _lookup(self, point: Mapping[str, Any], seed: int | None = None) -> Proposal | str:
        text = _point_text(point) + ("" if seed is None else f"@{seed}")
        if text not in self._built:
            try:
                self._built[text] = propose(self.space, point, seed)
            except SpaceError as err:
                self._built[text] = str(err)
        return self._built[text]


def _point_text(point: Mapping[str, Any]) -> str:
    return json.dumps(dict(point), sort_keys=True, default=str)


def trial_flops(space: Space, point: Mapping[str, Any]) -> float:
    """Training FLOPs of the trial at ``point`` (``budget.trial_flops``)."""
    return budget.trial_flops(space, point, task_geometry)


def effective_key(space: Space, point: Mapping[str, Any], seed: int | None = None) -> str:
    """What the trial at ``point`` (at ``seed``) trains (``budget.effective_key``)."""
    return budget.effective_key(space, point, task_geometry, seed)


def cheapest_flops(space: Space) -> float:
    """The cheapest trial the space allows (``budget.cheapest_flops``)."""
    return budget.cheapest_flops(space, task_geometry)


def check_budget(space: Space) -> float:
    """The cheapest trial's FLOPs; a budget below it is refused (``budget.check_budget``)."""
    return budget.check_budget(space, task_geometry)


def distributions(space: Space) -> dict[str, Any]:
    """Each search dimension as an Optuna distribution, keyed by its dotted name."""
    import optuna.distributions as od

    out = {}
    for key, dim in space.dimensions.items():
        if dim.dist == "choice":
            out[key] = od.CategoricalDistribution(dim.values)
        elif dim.dist == "int":
            out[key] = od.IntDistribution(int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
        else:
            out[key] = od.FloatDistribution(dim.low, dim.high, step=dim.step, log=dim.dist == "loguniform")
    return out


def grid_values(key: str, dim: Dimension) -> list[Any]:
    """The values the grid sampler tries for one dimension."""
    if dim.grid is not None:
        return list(dim.grid)
    if dim.dist == "choice":
        return list(dim.values)
    if dim.dist == "int":
        values = list(range(int(dim.low), int(dim.high) + 1, int(dim.step or 1)))
        if len(values) <= 64:
            return values
    raise SpaceError(f"{key}.grid: the grid sampler needs a list of values for this dimension")


def expected_trials(space: Space) -> int:
    """Trials the search is expected to run: ``search.trials``, or fewer if the budget buys
    fewer at the space's mean trial cost (``optimix plan SPACE``)."""
    search = space.base.search
    if search.budget_flops is None:
        return search.trials
    from optimix.core.hardware import resolve
    from optimix.core.outlook import space_outlook

    return space_outlook(space, hardware=resolve("cpu"), geometry=task_geometry, samples=64)["expected"]["trials"]


def startup_trials(space: Space) -> int:
    """Space-filling first points before TPE or GP model the results.

    Optuna's default, 10, leaves a 12-trial search almost all random; a quarter of the
    trials the search is expected to run gives the model most of them, and 3 is the fewest
    it can fit anything to.
    """
    search = space.base.search
    if search.startup_trials is not None:
        return search.startup_trials
    return min(10, max(3, round(expected_trials(space) / 4)))


def sampler_name(space: Space) -> str:
    """The sampler ``search.sampler`` names. ``auto`` picks the frontier sampler for one
    quality metric against FLOPs, at any size (past 200 configs it refits its GP only as they
    grow, ``frontier_sampler.REFIT``); otherwise Optuna's GP for small searches of up to
    three objectives and TPE for the rest."""
    search = space.base.search
    if search.sampler != "auto":
        return search.sampler
    objectives = space.spec.objectives
    if len(objectives) == 2 and MIN_FLOPS in objectives:
        return "frontier"
    if expected_trials(space) > 100:
        return "tpe"
    return "gp" if len(objectives) <= 3 else "tpe"


def startup_design(space: Space, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` space-filling first points (a Latin hypercube) for the model-based samplers.

    Random first points can all land in one corner (say, every rare frequency low), and the
    model then learns little from them; a Latin hypercube puts one point in each of ``n``
    equal slices of every dimension (in log scale for log dimensions). Points that are not
    valid trials are left out.
    """
    rng = np.random.default_rng([seed, 7])
    dims = space.dimensions
    slices = {key: (rng.permutation(n) + rng.random(n)) / n for key in dims}
    points = []
    for i in range(n):
        point = {key: dim.at(float(slices[key][i])) for key, dim in dims.items()}
        try:
            space.resolve(point)
        except SpaceError:
            continue
        points.append(point)
    return points


def attempt_seed(seed: int, attempt: int) -> int:
    """The sampler's seed for the ``attempt``-th run of a search (0: the first, then each
    ``--resume``). A seeded sampler restarted with its first seed would draw its first points
    again, and a resumed search would train points it has already trained."""
    if attempt == 0:
        return seed
    return int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])


def make_sampler(space: Space, seed: int, budget_left: Callable[[], float] = lambda: math.inf,
                 proposals: Proposals | None = None):
    """The Optuna sampler ``search.sampler`` names. A grid is walked by the searcher itself
    (``grid_points``): its points are queued whole, and the sampler under them is never asked.
    The frontier sampler prices its candidates with ``proposals`` and keeps within
    ``budget_left()``."""
    import optuna

    name = sampler_name(space)
    constraints = space.spec.constraints
    if name == "frontier":
        from optimix.search.frontier_sampler import FrontierSampler

        proposals = proposals or Proposals(space)
        quality = space.spec.quality
        return FrontierSampler(space.dimensions, distributions(space), space.spec.objectives.index(quality),
                               quality.maximize, proposals.cost, budget_left=budget_left,
                               n_startup=n_startup(space, seed), seed=seed,
                               key=lambda p: proposals.key(p) if proposals.feasible(p) else None,
                               built=proposals.built, size=proposals.size,
                               budget_limit=space.base.search.budget_flops, n_trials=expected_trials(space),
                               max_trials=space.base.search.trials,
                               ceiling=1.0 if quality.metric.startswith("acc/") else math.inf,
                               constraints=len(constraints))
    # Optuna 5 reads what ``searcher.tell`` set with ``Trial.set_constraint``; before it, a
    # sampler asks its ``constraints_func``
    told = ({"constraints_func": ConstraintValues(len(constraints))}
            if constraints and not hasattr(optuna.Trial, "set_constraint") else {})
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup(space, seed), **told)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup(space, seed), **told)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **told)
    return optuna.samplers.RandomSampler(seed=seed)


class ConstraintValues:
    """Optuna's ``constraints_func``: the values ``searcher.tell`` stored on the trial (<= 0
    met); a trial with none stored (pruned before its end) counts as missing every one."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, trial) -> list[float]:
        return list(trial.user_attrs.get(metrics.CONSTRAINT_ATTR, [1.0] * self.n))


def grid_points(space: Space, seed: int) -> list[dict[str, Any]]:
    """Every point of the grid, in a seeded order (a budget that ends the grid early leaves
    a spread of points rather than one corner)."""
    keys = list(space.dimensions)
    points = [dict(zip(keys, combo, strict=True)) for combo in
              itertools.product(*(grid_values(k, d) for k, d in space.dimensions.items()))]
    order = np.random.default_rng([seed, 3]).permutation(len(points))
    return [points[i] for i in order]


def grid_size(space: Space) -> int:
    return math.prod(len(grid_values(k, d)) for k, d in space.dimensions.items())




def optuna_value(metric: str, value: float) -> float:
    """What Optuna is told for an objective: costs in log10. They span orders of magnitude,
    and a GP models them far better in log scale; the ordering TPE and NSGA-II use is the same.
    (MLflow, the ledger and the frontier keep the plain values.)"""
    return math.log10(value) if metric in metrics.LOG_SCALE and value > 0 else value


def startup_points(space: Space, seed: int) -> list[dict[str, Any]]:
    """The first points of a new search: the user's ``points_to_evaluate``, else a
    space-filling start for the model-based samplers."""
    search = space.base.search
    if search.points_to_evaluate:
        return [dict(p) for p in search.points_to_evaluate]
    if sampler_name(space) in ("frontier", "tpe", "gp") and space.dimensions:
        return affordable_start(space, startup_design(space, startup_trials(space), seed))
    return []


def n_startup(space: Space, seed: int) -> int:
    """Finished trials before a model-based sampler proposes: ``startup_trials``, or fewer
    where a FLOPs budget affords fewer first points (``affordable_start``), 3 at least."""
    if space.base.search.points_to_evaluate or space.base.search.budget_flops is None:
        return startup_trials(space)
    return max(3, min(startup_trials(space), len(startup_points(space, seed))))


START_SHARE = 1 / 3
"""The most of a FLOPs budget the first points may take: the rest is the model's to spend."""


def affordable_start(space: Space, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Under ``search.budget_flops``, the first points cheapest first, as many as fit in
    ``START_SHARE`` of the budget (the cheapest one at least). A space-filling start that
    puts one point at each model size can otherwise spend a small budget on its dearest
    models before the sampler has chosen anything."""
    budget = space.base.search.budget_flops
    if budget is None or not points:
        return points
    priced = sorted(points, key=lambda p: trial_flops(space, p))
    out, spent = [], 0.0
    for point in priced:
        cost = trial_flops(space, point)
        if out and spent + cost > START_SHARE * budget:
            break
        out.append(point)
        spent += cost
    return out
