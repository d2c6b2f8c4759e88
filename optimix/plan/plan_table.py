"""What a plan reads: the accuracy metric and the share it is planned over (one of several
rare tasks: ``--task``), the trial table of a recorded search, the regime its sizes trained in
(``optimix.core.regime``), and the model sizes the search's outcome constraints leave to a
predicted answer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from optimix.core.config import Objective
from optimix.core.fit import PlanError, TrialTable
from optimix.core.metrics import CONSTRAINTS, OK, parse_constraints_tag
from optimix.core.regime import Regime, regime


def choose_metric(objectives: Iterable[Objective], rare_tasks: Iterable[str],
                  recorded: Iterable[str], task: str | None = None) -> str:
    """The accuracy metric to plan for: ``acc/TASK``, else the search's rare-task objective.

    ``rare_tasks`` are the trials' ``mixture.rare_task`` params, ``recorded`` the metric names
    the trials logged. ``PlanError`` names what is missing.
    """
    recorded = set(recorded)
    tasks = sorted(m.removeprefix("acc/") for m in recorded if m.startswith("acc/"))
    if task is not None:
        if f"acc/{task}" not in recorded:
            raise PlanError(f"--task: no trial recorded acc/{task} (tasks: {', '.join(tasks) or 'none'})")
        return f"acc/{task}"
    accs = [o.metric for o in objectives if o.metric.startswith("acc/") and o.maximize]
    if not accs:
        raise PlanError("the search has no accuracy objective (acc/<task>:max): name the task with --task")
    for rare in rare_tasks:
        if f"acc/{rare}" in accs:
            return f"acc/{rare}"
    return accs[0]


def freq_key(trials: Iterable[Any], task: str) -> str:
    """The param that holds ``task``'s share: its entry of ``mixture.rare`` on a search with
    several rare tasks, else ``mixture.rare_freq`` (the primary rare task's)."""
    params = {k for t in trials for k in t.params}
    for key in (f"mixture.rare.{task}", f"mixture.rare.{task}.freq"):
        if key in params:
            return key
    return "mixture.rare_freq"


def search_table(record: Any, task: str | None = None) -> tuple[dict[str, Any], TrialTable]:
    """The head of the answer's document and the trial table of a recorded search
    (``records.SearchRecord``), for the metric ``choose_metric`` picks."""
    where = f"search {record.run_id} in {record.experiment!r}"
    if not record.objectives:
        raise PlanError(f"{where} has no objectives recorded")
    if not record.trials:
        raise PlanError(f"{where} has no trial")
    metric = choose_metric(
        record.objectives, [t.params.get("mixture.rare_task", "") for t in record.trials],
        {m for t in record.trials for m in t.metrics}, task)
    table = TrialTable.from_records(record.trials, metric, freq_key(record.trials, metric.removeprefix("acc/")))
    if not len(table.usable()):
        raise PlanError(f"{where} has no finished trial with {metric}")
    doc = {"experiment": record.experiment, "search_run_id": record.run_id,
           "task": metric.removeprefix("acc/"), "metric": metric,
           "regime": trial_regime(record.trials).to_dict()}
    return doc, table


def trial_regime(trials: Iterable[Any]) -> Regime:
    """The regime (tokens per parameter and learning rates at each size) of a recorded
    search's finished trials (``records.TrialRecord``)."""
    return regime((t.metrics.get("params"), t.metrics.get("tokens"), t.params.get("train.lr"))
                  for t in trials if t.status == OK)


def constraint_sizes(table: TrialTable) -> np.ndarray | None:
    """The recorded sizes at which some finished trial met the search's outcome constraints
    (the sizes a predicted answer may use); None when every trial met them (or none were set)."""
    rows = table.usable_rows()
    if table.met[rows].all():
        return None
    return np.unique(table.params[rows][table.met[rows]])


def search_constraints(record: Any) -> list[str]:
    """The outcome constraints a recorded search (``records.SearchRecord``) was run with, as text."""
    return [str(c) for c in parse_constraints_tag(record.tags.get(CONSTRAINTS, ""))]


def constraints_doc(table: TrialTable, allowed: np.ndarray, constraints: Sequence[str] = ()) -> dict[str, Any]:
    """The plan document's ``constraints`` entry: the constraints (as recorded; empty when not
    known), how many finished trials met them and the sizes a predicted answer may use."""
    rows = table.usable_rows()
    met = int(table.met[rows].sum())
    return {"constraints": list(constraints), "met": met, "missed": int((~table.met[rows]).sum()),
            "sizes": [round(n) for n in allowed],
            "rule": "recorded answers only from trials that met the search's constraints; "
                    "predicted ones only at sizes where a recorded trial met them"
                    + ("; no finished trial met them: neither answers, and the fit is over every "
                       "finished trial" if not met else "")}
