"""What a trial costs before it runs, and what makes two trials the same.

The FLOPs of a trial follow from its config alone (``train.plan_trial``), so a search can
price a proposal before starting it, refuse what the budget cannot pay for, and tell when a
proposal would train a model it has already trained. No Ray, no Optuna, no MLflow here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from optimix.core.config import SpaceError, flatten
from optimix.core.space import Dimension, Space
from optimix.trial.train import plan_trial

# Entries that change how a search runs, never what one trial trains.
_NOT_TRAINING = ("search.", "hardware.", "name")
_BURSTS = ("mixture.burst_",)


def trial_flops(space: Space, point: Mapping[str, Any]) -> float:
    """Training FLOPs of the trial at ``point``: known before it runs."""
    return plan_trial(space.resolve(point)).train_flops


def planned_metrics(space: Space, point: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of the trial at ``point`` that its plan fixes before it runs, as a trial
    that finishes records them: ``train_flops``, ``tokens``, ``params``, ``non_embedding_params``."""
    plan = plan_trial(space.resolve(point))
    return {"train_flops": float(plan.train_flops), "tokens": float(plan.tokens),
            "params": float(plan.shape.params), "non_embedding_params": float(plan.shape.non_embedding_params)}


def cost_corners(dimensions: Mapping[str, Dimension], limit: int) -> list[dict[str, Any]]:
    """Points with each cost dimension (model, train, tasks) at one of its ends, or at each of
    its choices, and the others left out (at their middle): at most ``limit`` of them."""
    options = []
    for key, dim in dimensions.items():
        if key.split(".")[0] not in ("model", "train", "tasks"):
            continue
        if dim.dist == "choice":
            options.append([(key, v) for v in dim.values])
        else:
            ends = (int(dim.low), int(dim.high)) if dim.dist == "int" else (dim.low, dim.high)
            options.append([(key, v) for v in ends])
    return [dict(c) for c in itertools.islice(itertools.product(*options), limit)]


def unbuildable_corners(space: Space, limit: int = 256) -> tuple[int, list[tuple[dict[str, Any], str]]]:
    """Combinations of every dimension's ends (each range's low and high, every choice), at
    most ``limit``: (how many were tried, those whose config cannot be built, with why). A
    search records such points as infeasible; ``optimix validate`` warns of them."""
    options = [[(key, v) for v in (dim.values if dim.dist == "choice" else (dim.low, dim.high))]
               for key, dim in space.dimensions.items()]
    tried, bad = 0, []
    for combo in itertools.islice(itertools.product(*options), limit):
        tried += 1
        point = {k: int(v) if space.dimensions[k].dist == "int" else v for k, v in combo}
        try:
            space.resolve(point)
        except SpaceError as err:
            bad.append((point, str(err)))
    return tried, bad


def cheapest_flops(space: Space) -> float:
    """The cheapest trial the space allows (cost dims at each end, every choice)."""
    best = math.inf
    for point in cost_corners(space.dimensions, 4096):
        try:
            best = min(best, trial_flops(space, point))
        except SpaceError:
            continue  # an invalid corner (e.g. heads not dividing): other corners decide
    return best


def check_budget(space: Space) -> float:
    """The cheapest trial's FLOPs; a budget below it is bad input (named key)."""
    cheapest = cheapest_flops(space)
    budget = space.base.search.budget_flops
    if budget is not None and budget < cheapest:
        raise SpaceError(f"search.budget_flops: {budget:.3g} is below the cheapest trial ({cheapest:.3g} FLOPs)")
    return cheapest


def effective_key(space: Space, point: Mapping[str, Any]) -> str:
    """A digest of what the trial at ``point`` trains: the resolved config with float values
    on their quantum (``Dimension.quantum``), the model entries replaced by the shape actually
    built (``model.params`` values that round to one shape are one model), and the burst
    settings left out of an even delivery (they change nothing there). Trials are deterministic for a config and seed, so two points with
    one key would train the same model on the same data: the second teaches nothing."""
    dims = space.dimensions
    config = space.resolve({k: dims[k].quantum(v) if k in dims else v for k, v in point.items()})
    flat = flatten(config.model_dump(mode="json"))
    ignored = ("model.", *_NOT_TRAINING, *(_BURSTS if config.mixture.delivery == "even" else ()))
    doc = {k: v for k, v in flat.items() if not k.startswith(ignored)}
    doc["shape"] = asdict(plan_trial(config).shape)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]

