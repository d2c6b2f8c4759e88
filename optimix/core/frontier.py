"""Frontier candidates: trials' final results and their learning-curve points.

A trial evaluated at several token counts yields several (FLOPs, accuracy) points, each a
real model: the config trained with the same schedule and stopped at that step. Every one
of them is a candidate for the accuracy-vs-FLOPs frontier, so one trial can fill in the
cheap end of the frontier as well as its own final point. A candidate says which it is
(``final`` or a curve point at ``step`` of ``steps``), and so do MLflow
(``optimix.pareto`` for a final result, ``optimix.pareto_steps`` for curve points) and
``optimix frontier``.

Curve points stand in for a final result only where every objective is known at them:
accuracies, losses and the cost counts (``train_flops``, ``tokens``, ``params``), not the
timings. Pure: ledger entries (``LedgerEntry``) in, candidates out; no Ray, MLflow or torch.

A frontier row (``row``) is what ``optimix frontier --json`` lists, what the search summary
prints and what MLflow's frontier artifact holds: one builder for all of them. A listing shows
a point once (``tied``): trials that trained one effective config to the same objective values
are one row with their ``count`` and ``trial_ids``; MLflow still tags each of them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optimix.core import pareto, replicates
from optimix.core.config import Objective
from optimix.core.entry import LedgerEntry
from optimix.core.metrics import (
    OK,
    PRUNED,
    Constraint,
    curve_usable,
    final_metrics,
    missed,
    point_metrics,
)


@dataclass(frozen=True)
class Candidate:
    trial_id: str
    """The first of its trials (its config's first seed)."""
    step: int
    steps: int
    """The trial's planned steps: ``step < steps`` for a curve point of an unfinished schedule."""
    final: bool
    """The trial's finished result (the last curve point of an ``ok`` trial)."""
    metrics: Mapping[str, float]
    """Over its config's seeds, each metric's mean."""
    members: tuple[str, ...] = ()
    """Every trial of its config that has this point (its replicates), ``trial_id`` first."""
    samples: tuple[Mapping[str, float], ...] = ()
    """Their metrics, in the order of ``members``."""

    @property
    def trial_ids(self) -> tuple[str, ...]:
        return self.members or (self.trial_id,)

    @property
    def n(self) -> int:
        return len(self.trial_ids)

    def seed_values(self, metric: str) -> list[float]:
        """``metric`` at each of its seeds (the mean alone where no samples were kept)."""
        rows = self.samples or (self.metrics,)
        return [float(r[metric]) for r in rows if metric in r]


def candidates(entries: Iterable[LedgerEntry], objectives: Sequence[Objective],
               curve: bool = True, constraints: Sequence[Constraint] = ()) -> list[Candidate]:
    """Candidates from ledger entries (their ``trial_id``, ``status``, ``params``, ``result``),
    one per config (``replicates.config_id``: trials that differ only in their seed are one
    config) and point, at the mean over the config's seeds.

    An ``ok`` trial gives its final result and, with ``curve``, each earlier curve point; a
    ``pruned`` trial gives its curve points only (it has no final result). Failed and
    infeasible trials give nothing, and neither does a result or curve point whose mean
    misses one of the search's ``constraints``.
    """
    curve = curve and curve_usable([*(o.metric for o in objectives), *(c.metric for c in constraints)])
    groups: dict[str, list[Candidate]] = {}
    for c, config in _all_candidates(entries, curve):
        groups.setdefault(f"{config}/{c.final}/{c.step if not c.final else ''}", []).append(c)
    out = [_mean(group) for group in groups.values()]
    return [c for c in out if not missed(constraints, c.metrics)]


def _mean(group: Sequence[Candidate]) -> Candidate:
    first = group[0]
    if len(group) == 1:
        return Candidate(first.trial_id, first.step, first.steps, first.final, first.metrics,
                         (first.trial_id,), (first.metrics,))
    keys = [k for k in first.metrics if all(k in c.metrics for c in group)]
    means = {k: float(np.mean([c.metrics[k] for c in group])) for k in keys}
    return Candidate(first.trial_id, first.step, first.steps, first.final, means,
                     tuple(c.trial_id for c in group), tuple(c.metrics for c in group))


def _all_candidates(entries: Iterable[LedgerEntry], curve: bool) -> list[tuple[Candidate, str]]:
    out = []
    for e in entries:
        result = e.result
        config = replicates.config_id(e.params) if e.params else f"trial:{e.trial_id}"  # params unknown: its own
        steps = int(result.get("planned_steps") or result.get("steps") or 0)
        if e.status == OK:
            out.append((Candidate(e.trial_id, int(result.get("steps", steps)), steps, True,
                                  final_metrics(result)), config))
        if not curve or e.status not in (OK, PRUNED):
            continue
        for point in result.get("curve", []):
            if e.status == OK and int(point["step"]) >= int(result.get("steps", steps)):
                continue  # the final result itself
            out.append((Candidate(e.trial_id, int(point["step"]), steps, False,
                                  point_metrics(result, point)), config))
    return out


def values(cands: Sequence[Candidate], objectives: Sequence[Objective]) -> np.ndarray:
    rows = [[c.metrics.get(o.metric, math.nan) for o in objectives] for c in cands]
    return np.array(rows, dtype=float).reshape(len(cands), len(objectives))


def front(cands: Sequence[Candidate], objectives: Sequence[Objective]) -> list[Candidate]:
    """The non-dominated candidates, in ``pareto.frontier_order``.

    Final results follow ``optimix.core.pareto``'s rule (identical rows never dominate each other,
    so tied final results are all on the frontier). A learning-curve point whose objective
    values equal another candidate's is listed once: not at all if a final result has them,
    else the one with the smallest (trial id, step). Early points of many trials often tie
    (accuracy 0 at the same FLOPs), and one of them says all they say.
    """
    if not cands:
        return []
    vals = values(cands, objectives)
    order = [int(i) for i in pareto.frontier_order(vals, [o.mode for o in objectives])]
    finals = {tuple(vals[i]) for i in order if cands[i].final}
    first_curve: dict[tuple, int] = {}
    for i in order:
        key = tuple(vals[i])
        if not cands[i].final and key not in finals:
            j = first_curve.get(key)
            if j is None or (cands[i].trial_id, cands[i].step) < (cands[j].trial_id, cands[j].step):
                first_curve[key] = i
    keep = set(first_curve.values())
    return [cands[i] for i in order if cands[i].final or i in keep]


def membership(cands: Sequence[Candidate], objectives: Sequence[Objective]
               ) -> dict[str, tuple[bool, list[int]]]:
    """Per trial on the frontier: (its final result is on it, its curve steps that are). Every
    seed of a config on it is (the config's mean is what is on it)."""
    out: dict[str, tuple[bool, list[int]]] = {}
    for c in front(cands, objectives):
        for trial_id in c.trial_ids:  # every seed of a config on it
            final, steps = out.get(trial_id, (False, []))
            out[trial_id] = (final or c.final, steps if c.final else sorted({*steps, c.step}))
    return out


def hypervolume(cands: Sequence[Candidate], accuracy: str, reference_flops: float) -> float:
    """Area under the best-accuracy staircase in (log10 FLOPs, accuracy), bounded by
    accuracy 0 and ``reference_flops``: one number for "how good, how cheaply".

    FLOPs are taken in log scale so that a frontier point ten times cheaper counts the same
    at any size (trial costs span orders of magnitude).
    """
    if not cands:
        return 0.0
    v = np.array([[c.metrics.get(accuracy, math.nan), math.log10(c.metrics["train_flops"])]
                  for c in cands], dtype=float)
    return pareto.hypervolume_2d(v, ["max", "min"], [0.0, math.log10(reference_flops)])


def dominated_at_equal_flops(metrics: Mapping[str, float], cands: Iterable[Candidate],
                             objectives: Sequence[Objective], margin: float) -> bool:
    """Whether a point is beaten, at no more FLOPs, by some candidate by more than ``margin``
    in every objective other than FLOPs (the multi-fidelity stopping rule)."""
    others = [o for o in objectives if o.metric != "train_flops"]
    flops = metrics["train_flops"]
    for c in cands:
        if c.metrics.get("train_flops", math.inf) > flops:
            continue
        if all(_better(c.metrics.get(o.metric, math.nan), metrics.get(o.metric, math.nan), o.mode, margin)
               for o in others):
            return True
    return False


def _better(a: float, b: float, direction: str, margin: float) -> bool:
    return a > b + margin if direction == "max" else a < b - margin


# ---------------------------------------------------------------------------------------------
# Frontier rows


def row(*, trial_id: str, run_id: str, name: str, metrics: Mapping[str, Any], params: float,
        point: Mapping[str, Any], objectives: Sequence[Objective] | None = None,
        final: bool = True, step: int | None = None, steps: int | None = None,
        trial_ids: Sequence[str] | None = None, seeds: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One frontier row: a trial's final result (``final``) or its learning-curve point at ``step``.

    Keys, in order: ``run_id``, ``trial_id``, ``count`` and ``trial_ids`` (the trials the row
    stands for, ``trial_id`` first: just it unless given; ``tied`` fills them in), ``name``,
    ``final``, ``step`` and ``steps`` (where given), the objectives' values from ``metrics``
    (None where missing; every metric when ``objectives`` is None), ``params`` (the model's
    size) and ``point`` (the searched values); then, where given, what ``seeds`` says of the
    config's seeds (``seed_fields``: ``n``, ``confirmed``, ``stats``, ``seeds``, ``overrides``).
    """
    ids = [trial_id] if trial_ids is None else list(trial_ids)
    out: dict[str, Any] = {"run_id": run_id, "trial_id": trial_id, "count": len(ids), "trial_ids": ids,
                           "name": name, "final": final}
    if step is not None:
        out["step"] = step
    if steps is not None:
        out["steps"] = steps
    out.update(metrics if objectives is None else {o.metric: metrics.get(o.metric) for o in objectives})
    out["params"] = params
    out["point"] = dict(point)
    out.update(seeds or {})
    return out


def pooled_spread(cands: Sequence[Candidate], objectives: Sequence[Objective]) -> dict[str, float | None]:
    """Per measured objective (not one a plan fixes), the seed spread pooled over the configs
    with two or more seeds (``replicates.pooled_sd``; None where there are none)."""
    finals = [c for c in cands if c.final]
    return {o.metric: replicates.pooled_sd(c.seed_values(o.metric) for c in finals)
            for o in objectives if o.metric not in replicates.PLANNED}


def seed_fields(c: Candidate, objectives: Sequence[Objective], pooled: Mapping[str, float | None],
                seeds: Sequence[int], overrides: Sequence[str], confirm_at: int | None) -> dict[str, Any]:
    """A row's account of its config's seeds: ``n``; ``confirmed`` (trained at ``confirm_at``
    seeds or more; never without replicates); ``stats``, per measured objective, the seeds'
    mean, spread, 90% interval and split (``replicates.Summary``); the ``seeds``; and the
    ``overrides`` that retrain it (``optimix train SPACE --set KEY=VALUE ... --seed SEED``)."""
    stats = {m: replicates.summarize(c.seed_values(m), m, p).to_json()
             for m, p in pooled.items() if c.seed_values(m)}
    return {"n": c.n, "confirmed": confirm_at is not None and c.n >= confirm_at, "stats": stats,
            "seeds": list(seeds), "overrides": list(overrides)}


def tied(rows: Sequence[Mapping[str, Any]], objectives: Sequence[Objective],
         identity: Mapping[str, Hashable], order: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows with ties listed once: the final results of trials that share an effective config
    (``identity``, by trial id; a trial without one ties with none) and every objective's value
    become one row, the row of the first of them by ``order`` (finishing order, by trial id;
    else the order of ``rows``) with ``count`` and ``trial_ids`` (all of them, in that order).

    Only the listing groups them: each is still on the frontier (``front``, ``membership`` and
    the MLflow tags are per trial). Different configs with equal values stay rows of their own,
    and so do curve points (``front`` lists each value once already). A group's row stands
    where its first row in ``rows`` stood.
    """
    groups: dict[Hashable, list[tuple[int, Mapping[str, Any]]]] = {}
    slots: list[list[tuple[int, Mapping[str, Any]]]] = []
    for i, r in enumerate(rows):
        if not r.get("final", True):
            slots.append([(i, r)])
            continue
        values = tuple(_tie_value(r.get(o.metric)) for o in objectives)
        key = (identity.get(r["trial_id"], ("trial", r["trial_id"])), values)
        if key not in groups:
            groups[key] = []
            slots.append(groups[key])
        groups[key].append((i, r))
    out = []
    for members in slots:
        if order is not None:
            members = sorted(members, key=lambda m: (order.get(m[1]["trial_id"], math.inf), m[0]))
        ids = [t for _, r in members for t in r.get("trial_ids", [r["trial_id"]])]
        out.append({**members[0][1], "count": len(ids), "trial_ids": ids})
    return out


def _tie_value(value: Any) -> Any:
    """An objective's value as ties compare it: missing and NaN alike."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def params_identity(params: Mapping[str, Any]) -> str:
    """A trial's identity for ``tied`` where the space is not at hand (``budget.effective_key``
    needs it): its resolved params, seed included."""
    return json.dumps(dict(params), sort_keys=True, default=str)


def recorded_order(trials: Iterable[Any]) -> dict[str, tuple[int, int]]:
    """Finishing order of trials read back from MLflow, by trial id: the index their run's
    name starts with (``trial-007 ...``, given in the order the ledger took them), else as
    listed."""
    out = {}
    for i, t in enumerate(trials):
        found = re.match(r"trial-(\d+)\b", t.name or "")
        out[t.trial_id] = (int(found.group(1)) if found else math.inf, i)
    return out


def recorded_row(trial: Any, objectives: Sequence[Objective] | None = None,
                 step: int | None = None, metrics: Mapping[str, float] | None = None,
                 trial_ids: Sequence[str] | None = None, seeds: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``row`` of a trial read back from MLflow (``records.TrialRecord``): its final result
    (or ``metrics``: its config's means over ``trial_ids``), or its curve point at ``step``."""
    if metrics is None:
        metrics = trial.metrics if step is None else trial.curve.get(step, {})
    return row(trial_id=trial.trial_id, run_id=trial.run_id, name=trial.name, metrics=metrics,
               params=trial.metrics.get("params", 0), point=trial.point, objectives=objectives,
               final=step is None, step=step, trial_ids=trial_ids, seeds=seeds)


def recorded_rows(trials: Iterable[Any], objectives: Sequence[Objective],
                  confirm_at: int | None = None) -> list[dict[str, Any]]:
    """The frontier of a recorded search: the configs whose final results are on it, one row
    each at the mean over their seeds (their trials share ``optimix.config``; ``seed_fields``
    with ``confirm_at``), then its curve points (tied by params where that tag is missing)."""
    trials = list(trials)
    order = recorded_order(trials)
    ok = sorted((t for t in trials if t.status == OK), key=lambda t: order[t.trial_id])
    by_config: dict[str, list[Any]] = {}
    for t in ok:
        by_config.setdefault(recorded_config(t), []).append(t)
    pooled = pooled_spread([_mean([Candidate(t.trial_id, 0, 0, True, t.metrics) for t in group])
                            for group in by_config.values()], objectives)
    rows = []
    for group in by_config.values():
        on = [t for t in group if t.pareto]
        if not on:
            continue
        c = _mean([Candidate(t.trial_id, 0, 0, True, t.metrics) for t in on])
        rows.append(recorded_row(on[0], objectives, metrics=c.metrics, trial_ids=c.trial_ids,
                                 seeds=seed_fields(c, objectives, pooled, [_seed(t) for t in on],
                                                   replicates.overrides(on[0].point), confirm_at)))
    rows += _recorded_curve_rows(trials, objectives, pooled, confirm_at)
    identity = {t.trial_id: recorded_config(t) for t in trials}
    return tied(rows, objectives, identity, recorded_order(trials))


def _recorded_curve_rows(trials: Sequence[Any], objectives: Sequence[Objective],
                         pooled: Mapping[str, float | None], confirm_at: int | None) -> list[dict[str, Any]]:
    """The curve points on the frontier, one row per (config, step) at the mean over the
    config's seeds (all of them carry the step in ``optimix.pareto_steps``)."""
    groups: dict[tuple[str, int], list[Any]] = {}
    for t in trials:
        for step in t.pareto_steps:
            groups.setdefault((recorded_config(t), step), []).append(t)
    rows = []
    for (_, step), group in groups.items():
        c = _mean([Candidate(t.trial_id, step, 0, False, t.curve.get(step, {})) for t in group])
        rows.append(recorded_row(group[0], objectives, step, metrics=c.metrics, trial_ids=c.trial_ids,
                                 seeds=seed_fields(c, objectives, pooled, [_seed(t) for t in group],
                                                   replicates.overrides(group[0].point), confirm_at)))
    return rows


def recorded_config(trial: Any) -> str:
    """A recorded trial's config without its seed: its ``optimix.config`` tag, else its params'."""
    return trial.config or replicates.config_id(trial.params)


def _seed(trial: Any) -> int | None:
    value = trial.params.get("seed")
    return int(value) if value not in (None, "") else None


# ---------------------------------------------------------------------------------------------
# Has the frontier stopped moving?


def front_values(entries: Iterable[LedgerEntry], objectives: Sequence[Objective],
                 curve: bool = True, constraints: Sequence[Constraint] = ()) -> frozenset[tuple[float, ...]]:
    """The objective values of ``front(candidates(entries, ...))`` as a set: where the
    frontier is, whichever of several tied candidates stands for a point."""
    cands = front(candidates(entries, objectives, curve, constraints), objectives)
    return frozenset(tuple(float(x) for x in v) for v in values(cands, objectives))


def since_moved(entries: Sequence[LedgerEntry], objectives: Sequence[Objective],
                curve: bool = True, constraints: Sequence[Constraint] = ()) -> int:
    """Finished trials since the last one that moved the frontier; all of them if none did.

    ``entries`` are ledger entries in finishing order. A trial moved the frontier if the
    frontier of the entries up to it (``front_values``) differs from that of the entries
    before it: one of its candidates (its final result or a learning-curve point) is on it
    with values no earlier candidate had. A trial that only ties a frontier point, a failed
    one, and a pruned one whose curve points are all beaten did not move it.
    """
    entries = list(entries)
    after = front_values(entries, objectives, curve, constraints)
    for k in range(len(entries), 0, -1):
        before = front_values(entries[:k - 1], objectives, curve, constraints)
        if before != after:
            return len(entries) - k
        after = before
    return len(entries)
