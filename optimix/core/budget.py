"""What a trial costs before it runs, what makes two trials the same, and the FLOPs a search
may still spend.

A trial's plan (shape, steps, tokens, FLOPs) follows from its config and its tasks' geometry
(vocabulary size and sequence length, ``TaskGeometry``), which the trial side measures once
per distinct task config (``optimix.trial.tasks.task_geometry``) and callers pass in as
``geometry``. So a search prices a proposal before starting it, refuses what the budget
cannot pay for, and tells when a proposal would train a model it has already trained, and
pricing builds no data. No torch, Ray, Optuna or MLflow here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from optimix.core.config import SpaceError, TrialConfig, flatten
from optimix.core.entry import LedgerEntry
from optimix.core.shape import Shape, shape_for
from optimix.core.space import Dimension, Space


@dataclass(frozen=True)
class TaskGeometry:
    """What the model's size depends on in a trial's tasks."""

    vocab_size: int
    seq_len: int


Geometry = Callable[[TrialConfig], TaskGeometry]
"""A trial config's ``TaskGeometry``: ``optimix.trial.tasks.task_geometry`` (cached per task config)."""


@dataclass(frozen=True)
class Plan:
    """What a trial will cost, known before it runs."""

    shape: Shape
    steps: int
    tokens: int
    train_flops: float

    def known_metrics(self) -> dict[str, float]:
        """The metrics the plan fixes, as a trial that finishes records them."""
        return {"train_flops": float(self.train_flops), "tokens": float(self.tokens),
                "params": float(self.shape.params), "non_embedding_params": float(self.shape.non_embedding_params)}


def plan(config: TrialConfig, geometry: TaskGeometry) -> Plan:
    """Shape, steps, tokens and FLOPs of a trial of ``config`` on tasks of ``geometry``."""
    n_ctx = geometry.seq_len
    shape = shape_for(config.model, geometry.vocab_size, n_ctx)
    tokens_per_step = config.train.batch_size * n_ctx
    if config.train.tokens is not None:
        steps = max(1, math.ceil(config.train.tokens / tokens_per_step))
    else:
        steps = max(1, math.floor(config.train.flops / (shape.train_flops_per_token * tokens_per_step)))
    tokens = steps * tokens_per_step
    return Plan(shape, steps, tokens, shape.train_flops_per_token * tokens)


@dataclass(frozen=True)
class Proposal:
    """A point of the space, built once: its config, plan, cost and effective key."""

    point: dict[str, Any]
    config: TrialConfig
    plan: Plan
    key: str
    """What the trial trains (``effective_key``): two proposals with one key train one model."""

    @property
    def cost(self) -> float:
        """Training FLOPs, known before the trial runs."""
        return self.plan.train_flops

    @property
    def seed(self) -> int:
        return self.config.seed

    def params(self) -> dict[str, Any]:
        """The resolved config's dotted keys (a ledger entry's ``params``)."""
        return flatten(self.config.model_dump(mode="json"))


def propose(space: Space, point: Mapping[str, Any], geometry: Geometry, seed: int | None = None) -> Proposal:
    """The trial at ``point`` (at ``seed``: a replicate; else the space's seed) as a
    ``Proposal``; ``SpaceError`` if its config cannot be built."""
    config = _seeded(space.resolve(point), seed)
    planned = plan(config, geometry(config))
    dims = space.dimensions
    quantized = {k: dims[k].quantum(v) if k in dims else v for k, v in point.items()}
    keyed, keyed_plan = config, planned
    if quantized != dict(point):
        keyed = _seeded(space.resolve(quantized), seed)
        keyed_plan = plan(keyed, geometry(keyed))
    return Proposal(dict(point), config, planned, _key(keyed, keyed_plan.shape))


def _seeded(config: TrialConfig, seed: int | None) -> TrialConfig:
    return config if seed is None else config.model_copy(update={"seed": int(seed)})


def _key(config: TrialConfig, shape: Shape) -> str:
    """A digest of what a trial of ``config`` trains: its entries that train
    (``FieldMeaning.trains``), the model entries replaced by the shape actually built
    (``as_shape``: ``model.params`` values that round to one shape are one model), and the burst
    settings left out of an even delivery (``bursts_only``: they change nothing there)."""
    even = config.mixture.delivery == "even"
    doc = {}
    for key, value in flatten(config.model_dump(mode="json")).items():
        meaning = TrialConfig.meaning(key)
        if meaning.trains and not meaning.as_shape and not (meaning.bursts_only and even):
            doc[key] = value
    doc["shape"] = asdict(shape)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def effective_key(space: Space, point: Mapping[str, Any], geometry: Geometry, seed: int | None = None) -> str:
    """What the trial at ``point`` trains: the resolved config with float values on their
    quantum (``Dimension.quantum``), as ``_key`` digests it. Trials are deterministic for a
    config and seed, so two points with one key would train the same model on the same data:
    the second teaches nothing. ``seed``: a replicate's (else the space's)."""
    return propose(space, point, geometry, seed).key


def trial_flops(space: Space, point: Mapping[str, Any], geometry: Geometry) -> float:
    """Training FLOPs of the trial at ``point``: known before it runs."""
    config = space.resolve(point)
    return plan(config, geometry(config)).train_flops


def planned_metrics(space: Space, point: Mapping[str, Any], geometry: Geometry) -> dict[str, float]:
    """The metrics of the trial at ``point`` that its plan fixes before it runs, as a trial
    that finishes records them: ``train_flops``, ``tokens``, ``params``, ``non_embedding_params``."""
    config = space.resolve(point)
    return plan(config, geometry(config)).known_metrics()


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


def cheapest_flops(space: Space, geometry: Geometry) -> float:
    """The cheapest trial the space allows (cost dims at each end, every choice)."""
    best = math.inf
    for point in cost_corners(space.dimensions, 4096):
        try:
            best = min(best, trial_flops(space, point, geometry))
        except SpaceError:
            continue  # an invalid corner (e.g. heads not dividing): other corners decide
    return best


def check_budget(space: Space, geometry: Geometry) -> float:
    """The cheapest trial's FLOPs; a budget below it is bad input (named key)."""
    cheapest = cheapest_flops(space, geometry)
    budget = space.base.search.budget_flops
    if budget is not None and budget < cheapest:
        raise SpaceError(f"search.budget_flops: {budget:.3g} is below the cheapest trial ({cheapest:.3g} FLOPs)")
    return cheapest


@dataclass
class Budget:
    """A search's FLOPs: the limit, what finished trials spent, what attempts stopped before
    they finished spent (``lost``: compute with no result), what running trials may spend
    (``reserved``, by Tune trial). Charged here only, from the ledger's lines as they are
    written (``charge``) or read back on ``--resume`` (``from_ledger``)."""

    limit: float | None
    cheapest: float
    spent: float = 0.0
    lost: float = 0.0
    reserved: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_ledger(cls, limit: float | None, cheapest: float, trials: Iterable[LedgerEntry],
                    lost_flops: float = 0.0) -> Budget:
        """The budget of a search whose ledger records ``trials`` (finished) and ``lost_flops``
        (its interrupted attempts)."""
        budget = cls(limit, cheapest)
        for entry in trials:
            budget.charge(entry)
        budget.charge_lost(lost_flops)
        return budget

    def left(self) -> float:
        limit = self.limit if self.limit is not None else math.inf
        return limit - self.spent - self.lost - sum(self.reserved.values())

    def exhausted(self) -> bool:
        """Not even the cheapest trial fits in what is left."""
        return self.left() < self.cheapest

    def reserve(self, slot: str, flops: float) -> None:
        """Hold ``flops`` for a trial about to run in Tune trial ``slot``."""
        self.reserved[slot] = self.reserved.get(slot, 0.0) + flops

    def release(self, slot: str) -> None:
        self.reserved.pop(slot, None)

    def charge(self, entry: LedgerEntry) -> None:
        """A finished trial, as its ledger line is written: what it trained."""
        self.spent += entry.train_flops

    def charge_lost(self, flops: float) -> None:
        """An attempt stopped before it finished: its compute, with no result."""
        self.lost += float(flops)

    def over(self, tolerance: float = 0.0) -> bool:
        """Whether what was spent (``spent`` and ``lost``) exceeds the limit by more than
        ``tolerance`` of it."""
        return self.limit is not None and self.spent + self.lost > self.limit * (1 + tolerance)
