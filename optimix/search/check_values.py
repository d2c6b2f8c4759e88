"""``optimix check``: the values each record holds of a trial agree.

The ledger is the reference: each child run's ``train_flops`` and other final metrics, each
Optuna trial's ``optimix.train_flops``, the parent's ``spent_flops`` and the budget, and each
trial's point as its child run, its Optuna trial and its own params have it. Pure, over a
``check_record.Record``; trials in flight (``check.in_flight``) are not judged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from optimix.core import metrics
from optimix.core.budget import Budget
from optimix.core.metrics import FLOPS_ATTR
from optimix.records import tracking
from optimix.records.records import RunRecord
from optimix.search.check_record import REL_TOL, LedgerTrial, Record, Violation


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL)


def first_runs(record: Record) -> dict[str, RunRecord]:
    runs: dict[str, RunRecord] = {}
    for run in record.children:
        runs.setdefault(run.trial_id, run)
    return runs


def check_flops(record: Record, trials: Sequence[LedgerTrial], flight: set[str]) -> list[Violation]:
    out = []
    runs = first_runs(record)
    for t in trials:
        run = None if t.trial_id in flight else runs.get(t.trial_id)
        logged = run.metrics.get("train_flops") if run else None
        if logged is not None and not _close(logged, t.train_flops):
            out.append(Violation("flops-mlflow", f"trial {t.trial_id} (run {run.run_id}) logged "
                                                 f"train_flops {logged:.6g}, the ledger has "
                                                 f"{t.train_flops:.6g}"))
    by_id = {t.trial_id: t for t in trials}
    for ot in record.optuna or []:
        t = by_id.get(ot.trial_id or "")
        if t is not None and ot.train_flops is not None and not _close(ot.train_flops, t.train_flops):
            out.append(Violation("flops-optuna", f"Optuna trial #{ot.number} (trial {t.trial_id}) "
                                                 f"records {FLOPS_ATTR} {ot.train_flops:.6g}, the "
                                                 f"ledger has {t.train_flops:.6g}"))
    budget = Budget.from_ledger(record.budget_flops, 0.0, [t.entry for t in trials], record.interrupted_flops)
    spent = budget.spent
    if record.parent is not None and not record.running:
        logged = record.parent.metrics.get("spent_flops")
        if logged is None:
            out.append(Violation("flops-parent", f"parent run {record.parent.run_id} has no spent_flops "
                                                 f"metric (the ledger's total is {spent:.6g}): the search "
                                                 "did not finish; --resume completes it"))
        elif not _close(logged, spent):
            out.append(Violation("flops-parent", f"parent run {record.parent.run_id} logged spent_flops "
                                                 f"{logged:.6g}, the ledger's total is {spent:.6g}"))
    if budget.over(REL_TOL):
        last = trials[-1].trial_id if trials else "-"
        lost = f" (+{budget.lost:.6g} in interrupted attempts)" if budget.lost else ""
        out.append(Violation("flops-budget", f"the ledger's trials spent {spent:.6g} FLOPs{lost}, over "
                                             f"the budget of {budget.limit:.6g} (last trial {last})"))
    return out


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=REL_TOL)


def check_metrics(record: Record, trials: Sequence[LedgerTrial], flight: set[str]) -> list[Violation]:
    """Every final metric the ledger has (objectives included) against the child run's; a
    metric missing from a terminated run of an ok or pruned trial (which logs them all) too.
    ``train_flops`` is ``flops-mlflow``'s."""
    runs = first_runs(record)
    out = []
    for t in trials:
        run = runs.get(t.trial_id)
        if run is None or t.trial_id in flight:
            continue
        want = {k: v for k, v in t.entry.final_metrics().items() if k != "train_flops"}
        wrong = [f"{k} {run.metrics[k]:.6g} (the ledger: {v:.6g})" for k, v in want.items()
                 if k in run.metrics and not _same(run.metrics[k], v)]
        complete = t.status in (metrics.OK, metrics.PRUNED) and run.status in metrics.TERMINATED
        missing = [k for k in want if k not in run.metrics] if complete else []
        if wrong or missing:
            said = [f"logged {', '.join(wrong[:3])}"] if wrong else []
            said += [f"has no {', '.join(missing[:3])}"] if missing else []
            out.append(Violation("metric-mlflow", f"trial {t.trial_id} (run {run.run_id}) "
                                                  + "; ".join(said)))
    return out


def check_points(record: Record, trials: Sequence[LedgerTrial], flight: set[str]) -> list[Violation]:
    """The ledger's point against what it resolved to (the ledger's params), the child run's
    params and ``optimix.point`` tag, and the Optuna trial's params (told by trial_id); a key
    another record does not have is not compared."""
    runs = first_runs(record)
    optuna = {ot.trial_id: ot for ot in record.optuna or [] if ot.trial_id}
    out = []
    for t in trials:
        if t.trial_id in flight:
            continue
        others: list[tuple[str, Mapping[str, Any]]] = [("its params", t.params)]
        run = runs.get(t.trial_id)
        if run is not None:
            others.append((f"its child run {run.run_id}'s params", run.params))
            if metrics.POINT in run.tags:
                others.append((f"its child run's {metrics.POINT} tag", _json_or_empty(run.tags[metrics.POINT])))
        if t.trial_id in optuna:
            others.append((f"its Optuna trial #{optuna[t.trial_id].number}'s params", optuna[t.trial_id].params))
        for key, value in t.point.items():
            differ = [f"{where} {values[key]!r}" for where, values in others
                      if key in values and not _equal_value(values[key], value)]
            if differ:
                out.append(Violation("point", f"trial {t.trial_id}: the ledger's point has {key}={value!r}, "
                                              + ", ".join(differ)))
                break  # one line per trial
    return out


def _equal_value(other: Any, value: Any) -> bool:
    """A point's value against another record's: equal, or equal as MLflow stores it (text)."""
    if isinstance(other, str) and not isinstance(value, str):
        if other == tracking.param_value(value):
            return True
        try:
            return float(other) == float(value)
        except (TypeError, ValueError):
            return False
    return other == value and isinstance(other, bool) == isinstance(value, bool)


def _json_or_empty(text: str) -> Mapping[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, Mapping) else {}
