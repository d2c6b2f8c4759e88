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
timings. Pure: ledger entries (dicts) in, candidates out; no Ray, MLflow or torch.

A frontier row (``row``) is what ``optimix frontier --json`` lists, what the search summary
prints and what MLflow's frontier artifact holds: one builder for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optimix import pareto
from optimix.metrics import OK, PRUNED, curve_usable, final_metrics, point_metrics


@dataclass(frozen=True)
class Candidate:
    trial_id: str
    step: int
    steps: int
    """The trial's planned steps: ``step < steps`` for a curve point of an unfinished schedule."""
    final: bool
    """The trial's finished result (the last curve point of an ``ok`` trial)."""
    metrics: Mapping[str, float]


def candidates(entries: Iterable[Mapping[str, Any]], objectives: Sequence[tuple[str, str]],
               curve: bool = True) -> list[Candidate]:
    """Candidates from ledger entries (``trial_id``, ``status``, ``result``).

    An ``ok`` trial gives its final result and, with ``curve``, each earlier curve point; a
    ``pruned`` trial gives its curve points only (it has no final result). Failed and
    infeasible trials give nothing.
    """
    curve = curve and curve_usable(objectives)
    out = []
    for e in entries:
        result = e["result"]
        steps = int(result.get("planned_steps") or result.get("steps") or 0)
        if e["status"] == OK:
            out.append(Candidate(e["trial_id"], int(result.get("steps", steps)), steps, True,
                                 final_metrics(result)))
        if not curve or e["status"] not in (OK, PRUNED):
            continue
        for point in result.get("curve", []):
            if e["status"] == OK and int(point["step"]) >= int(result.get("steps", steps)):
                continue  # the final result itself
            out.append(Candidate(e["trial_id"], int(point["step"]), steps, False,
                                 point_metrics(result, point)))
    return out


def values(cands: Sequence[Candidate], objectives: Sequence[tuple[str, str]]) -> np.ndarray:
    rows = [[c.metrics.get(m, math.nan) for m, _ in objectives] for c in cands]
    return np.array(rows, dtype=float).reshape(len(cands), len(objectives))


def front(cands: Sequence[Candidate], objectives: Sequence[tuple[str, str]]) -> list[Candidate]:
    """The non-dominated candidates, in ``pareto.frontier_order``.

    Final results follow ``optimix.pareto``'s rule (identical rows never dominate each other,
    so tied final results are all on the frontier). A learning-curve point whose objective
    values equal another candidate's is listed once: not at all if a final result has them,
    else the one with the smallest (trial id, step). Early points of many trials often tie
    (accuracy 0 at the same FLOPs), and one of them says all they say.
    """
    if not cands:
        return []
    vals = values(cands, objectives)
    order = [int(i) for i in pareto.frontier_order(vals, [d for _, d in objectives])]
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


def membership(cands: Sequence[Candidate], objectives: Sequence[tuple[str, str]]
               ) -> dict[str, tuple[bool, list[int]]]:
    """Per trial on the frontier: (its final result is on it, its curve steps that are)."""
    out: dict[str, tuple[bool, list[int]]] = {}
    for c in front(cands, objectives):
        final, steps = out.get(c.trial_id, (False, []))
        out[c.trial_id] = (final or c.final, steps if c.final else sorted({*steps, c.step}))
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
                             objectives: Sequence[tuple[str, str]], margin: float) -> bool:
    """Whether a point is beaten, at no more FLOPs, by some candidate by more than ``margin``
    in every objective other than FLOPs (the multi-fidelity stopping rule)."""
    others = [(m, d) for m, d in objectives if m != "train_flops"]
    flops = metrics["train_flops"]
    for c in cands:
        if c.metrics.get("train_flops", math.inf) > flops:
            continue
        if all(_better(c.metrics.get(m, math.nan), metrics.get(m, math.nan), d, margin) for m, d in others):
            return True
    return False


def _better(a: float, b: float, direction: str, margin: float) -> bool:
    return a > b + margin if direction == "max" else a < b - margin


# ---------------------------------------------------------------------------------------------
# Frontier rows


def row(*, trial_id: str, run_id: str, name: str, metrics: Mapping[str, Any], params: float,
        point: Mapping[str, Any], objectives: Sequence[tuple[str, str]] | None = None,
        final: bool = True, step: int | None = None, steps: int | None = None) -> dict[str, Any]:
    """One frontier row: a trial's final result (``final``) or its learning-curve point at ``step``.

    Keys, in order: ``run_id``, ``trial_id``, ``name``, ``final``, ``step`` and ``steps`` (where
    given), the objectives' values from ``metrics`` (None where missing; every metric when
    ``objectives`` is None), ``params`` (the model's size) and ``point`` (the searched values).
    """
    out: dict[str, Any] = {"run_id": run_id, "trial_id": trial_id, "name": name, "final": final}
    if step is not None:
        out["step"] = step
    if steps is not None:
        out["steps"] = steps
    out.update(metrics if objectives is None else {m: metrics.get(m) for m, _ in objectives})
    out["params"] = params
    out["point"] = dict(point)
    return out


def recorded_row(trial: Any, objectives: Sequence[tuple[str, str]] | None = None,
                 step: int | None = None) -> dict[str, Any]:
    """``row`` of a trial read back from MLflow (``records.TrialRecord``): its final result,
    or its learning-curve point at ``step``."""
    return row(trial_id=trial.trial_id, run_id=trial.run_id, name=trial.name,
               metrics=trial.metrics if step is None else trial.curve.get(step, {}),
               params=trial.metrics.get("params", 0), point=trial.point, objectives=objectives,
               final=step is None, step=step)


def recorded_rows(trials: Iterable[Any], objectives: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """The frontier of a recorded search: the final results on it, then its curve points."""
    trials = list(trials)
    return ([recorded_row(t, objectives) for t in trials if t.status == OK and t.pareto]
            + [recorded_row(t, objectives, step) for t in trials for step in t.pareto_steps])
