"""``optimix plan SPACE.yaml``: before a search, what its trials cost and how many a budget
buys, from the space alone. Pure: numpy, no MLflow or torch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from optimix.core.fit import PlanError
from optimix.core.hardware import Hardware

if TYPE_CHECKING:
    from optimix.core.budget import Geometry


def space_outlook(space: Any, *, hardware: Hardware, geometry: Geometry, budget_flops: float | None = None,
                  workers: int | None = None, samples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Cheapest and dearest trial, trials per budget, wall time and money: from the space alone.

    The cost of a trial is known before it runs (``search.trial_flops``); the sampler's points
    are not, so the expected cost is the mean over ``samples`` points drawn uniformly (in log
    scale for log dimensions), and the dearest is the largest over those and every corner.
    """
    from optimix.core.budget import cheapest_flops, cost_corners, trial_flops
    from optimix.core.config import SpaceError

    search = space.base.search
    workers = workers or search.max_concurrent
    if workers < 1:
        raise PlanError(f"--workers: expected at least 1, got {workers}")
    budget = budget_flops if budget_flops is not None else search.budget_flops
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise PlanError(f"--budget-flops: expected a positive number, got {budget:g}")
    rng = np.random.default_rng(seed)
    corners, drawn = [], []
    for points, out in ((cost_corners(space.dimensions, 64), corners),
                        ((_draw(space.dimensions, rng) for _ in range(samples)), drawn)):
        for point in points:
            try:
                out.append(trial_flops(space, point, geometry))
            except SpaceError:
                continue  # an invalid combination is never started by a search either
    if not drawn:
        raise PlanError("no point drawn from the space is a valid trial")
    drawn = np.array(drawn)
    cheapest = min([cheapest_flops(space, geometry), *corners, drawn.min()])
    dearest = max([*corners, drawn.max()])
    mean = float(drawn.mean())
    doc: dict[str, Any] = {
        "space": space.name, "dimensions": list(space.dimensions),
        "trial_flops": {"cheapest": cheapest, "mean": mean, "dearest": dearest,
                        "samples": len(drawn)},
        "trials_cap": search.trials, "workers": workers, "budget_flops": budget,
        "hardware": hardware.to_dict(),
        "trial_hours": {"cheapest": hardware.hours(cheapest), "mean": hardware.hours(mean),
                        "dearest": hardware.hours(dearest)},
    }
    if budget is not None and budget < cheapest:
        raise PlanError(f"--budget-flops: {budget:.3g} is below the cheapest trial ({cheapest:.3g} FLOPs)")
    doc.update(_cases(search.trials, budget, workers, hardware, {"expected": mean, "worst": dearest}))
    doc["worst"]["note"] = "every trial at the dearest point"
    doc["note"] = ("times count training FLOPs at the profile's rate only: start-up, data, "
                   "evaluation and idle workers come on top")
    return doc


def _cases(cap: int, budget: float | None, workers: int, hardware: Hardware,
           per_trial: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """For each case's FLOPs per trial: how many trials the budget (or the cap) buys, and
    their FLOPs, device hours, wall hours at ``workers`` at a time, and money."""
    cases = {}
    for case, flops_each in per_trial.items():
        trials = cap if budget is None else min(cap, int(budget // flops_each))
        flops = trials * flops_each
        cases[case] = {
            "trials": trials, "train_flops": flops,
            "device_hours": hardware.hours(flops),
            "wall_hours": math.ceil(trials / workers) * hardware.hours(flops_each),
            "cost_usd": hardware.cost_usd(flops),
        }
    return cases


def _draw(dimensions: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A uniform draw of the space: a grid's values, else ``Dimension.at`` a uniform number."""
    return {key: dim.grid[rng.integers(len(dim.grid))] if dim.grid is not None else dim.at(rng.uniform())
            for key, dim in dimensions.items()}
