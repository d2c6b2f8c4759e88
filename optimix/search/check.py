"""``optimix check``: a recorded search's ledger, MLflow runs and Optuna journal agree.

A search keeps three records of the same trials: the ledger (``results.jsonl`` in its state
folder, written first), MLflow (one parent run, one child run per trial) and the Optuna
journal (``optuna.journal``). :func:`read` (``check_record``) gathers the three into one
:class:`Record`; :func:`check` is pure over it and returns one :class:`Violation` per broken
invariant, each of one of the kinds in :data:`KINDS` and naming the trial it is about.

While the search runs (its state says ``running`` and its driver holds the ``lock`` file),
what is written after the ledger line (Optuna's ``tell``, the MLflow child run, the frontier
tags, the parent's ``spent_flops``) may lag behind it. ``read`` reads MLflow and Optuna
before the ledger, so whatever they hold is in the ledger; a ledger trial that is not yet
settled in both (told to Optuna, its child run terminated) is *in flight* and is not judged,
and the frontier tags, the parent's ``spent_flops`` and RUNNING Optuna trials wait until the
search stops (:func:`in_flight`, :func:`summary`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from optimix.core import frontier, metrics
from optimix.core.config import SpaceError
from optimix.core.space import Space
from optimix.records import tracking
from optimix.records.records import RunRecord
from optimix.search.check_record import (
    KINDS,
    REL_TOL,
    LedgerTrial,
    OptunaTrial,
    Record,
    Violation,
    find_state,
    read,
)
from optimix.search.check_values import check_flops, check_metrics, check_points

__all__ = ["KINDS", "REL_TOL", "LedgerTrial", "OptunaTrial", "Record", "Violation", "check",
           "config_key", "find_state", "in_flight", "read", "report", "summary"]

# ---------------------------------------------------------------------------------------------
# The invariants (pure)


def check(record: Record) -> list[Violation]:
    """Every violation of the record, ledger order within each kind."""
    trials = _first_of_each(record.ledger)
    flight = in_flight(record, trials)
    out = _check_state(record)
    out += _check_parent(record)
    out += _check_ledger(record.ledger)
    out += _check_children(record, trials, flight)
    out += _check_repeats(record, trials)
    out += _check_pareto(record, trials)
    out += _check_configs(record, trials, flight)
    out += _check_optuna(record, trials, flight)
    out += check_flops(record, trials, flight)
    out += check_metrics(record, trials, flight)
    out += check_points(record, trials, flight)
    return out


def in_flight(record: Record, trials: Sequence[LedgerTrial]) -> set[str]:
    """While the search runs, the ledger trials not yet settled in MLflow and Optuna (a
    terminated child run, an Optuna trial told its outcome): written to the ledger, on their
    way to the others. Empty once the search has stopped: then everything is judged."""
    if not record.running:
        return set()
    logged = {r.trial_id for r in record.children if r.status in metrics.TERMINATED and r.ended}
    told = {ot.trial_id for ot in record.optuna or [] if ot.trial_id and ot.state not in ("RUNNING", "WAITING")}
    return {t.trial_id for t in trials if t.trial_id not in logged or t.trial_id not in told}


def _check_state(record: Record) -> list[Violation]:
    out = [Violation("ledger-malformed", error) for error in record.ledger_errors]
    if not record.state_found and (record.ledger or record.ledger_errors):
        out.append(Violation("state", f"{record.state_dir / 'state.json'} is missing, but the ledger "
                                      f"has {len(_first_of_each(record.ledger))} trials"))
    return out


def _first_of_each(ledger: Sequence[LedgerTrial]) -> list[LedgerTrial]:
    """The ledger with a repeated trial_id kept once (its first line): a duplicated line is
    reported once, as ``ledger-duplicate``, not again by every check that sums or counts."""
    seen: set[str] = set()
    out = []
    for t in ledger:
        if t.trial_id not in seen:
            seen.add(t.trial_id)
            out.append(t)
    return out


def _check_parent(record: Record) -> list[Violation]:
    ids = [p.run_id for p in record.parents]
    named = record.state.get("parent_run_id")
    where = "/".join(record.state_dir.parts[-2:])
    if len(ids) != 1:
        found = ", ".join(ids) if ids else "none"
        named = f"; state.json names {named}" if named else ""
        return [Violation("parent", f"{len(ids)} MLflow search runs are tagged with state folder "
                                    f"{where} ({found}); there must be exactly one{named}")]
    if named and named != ids[0]:
        return [Violation("parent", f"state.json names parent run {named}, but the search run "
                                    f"tagged with state folder {where} is {ids[0]}")]
    return []


def _check_ledger(ledger: Sequence[LedgerTrial]) -> list[Violation]:
    counts = Counter(t.trial_id for t in ledger)
    return [Violation("ledger-duplicate", f"trial {tid} has {n} lines in the ledger")
            for tid, n in counts.items() if n > 1]


def _check_children(record: Record, trials: Sequence[LedgerTrial], flight: set[str]) -> list[Violation]:
    by_trial: dict[str, list[RunRecord]] = {}
    for run in record.children:
        by_trial.setdefault(run.trial_id, []).append(run)
    out = []
    for t in trials:
        runs = by_trial.get(t.trial_id, [])
        pending = t.trial_id in flight  # on its way to MLflow
        if not runs:
            if not pending:
                said = (f" (the ledger logged it as run {record.logged[t.trial_id]})"
                        if t.trial_id in record.logged else "")
                out.append(Violation("child-missing", f"trial {t.trial_id} ({t.name}) has no MLflow "
                                                      f"child run{said}"))
            continue
        if len(runs) > 1:
            out.append(Violation("child-duplicate", f"trial {t.trial_id} has {len(runs)} MLflow child "
                                                    f"runs: {', '.join(r.run_id for r in runs)}"))
        run = runs[0]
        problems = _incomplete(run, t)
        if problems and not pending:
            out.append(Violation("child-incomplete", f"trial {t.trial_id} (run {run.run_id}): "
                                                     + "; ".join(problems)))
        tag = run.tags.get(metrics.STATUS)
        if tag != t.status and not pending:
            out.append(Violation("child-status", f"trial {t.trial_id} (run {run.run_id}) is tagged "
                                                 f"{tag!r}, the ledger says {t.status!r}"))
    known = {t.trial_id for t in trials}
    for run in record.children:
        if run.trial_id not in known:
            named = f"trial_id {run.trial_id}" if run.trial_id else "no trial_id tag"
            out.append(Violation("child-stray", f"run {run.run_id} ({named}) is a child of the search "
                                                "but not a trial in the ledger"))
    return out


def _incomplete(run: RunRecord, t: LedgerTrial) -> list[str]:
    problems = []
    if run.status not in metrics.TERMINATED or not run.ended:
        problems.append(f"run status {run.status}, not terminated")
    missing = [k for k in t.params if k not in run.params]
    if missing:
        problems.append(f"{len(missing)} params missing ({', '.join(missing[:3])})")
    differ = [k for k, v in t.params.items() if k in run.params and run.params[k] != tracking.param_value(v)]
    if differ:
        problems.append(f"{len(differ)} params differ from the ledger's ({', '.join(differ[:3])})")
    if "train_flops" not in run.metrics:
        problems.append("no train_flops metric")
    return problems


def config_key(space: Space | None, trial: LedgerTrial) -> str:
    """What ``trial`` trained: ``budget.effective_key`` (the key the searcher refuses to
    train twice) where the space is known, else the ledger's params, seed included."""
    if space is not None:
        from optimix.search.proposals import effective_key

        seed = trial.params.get("seed")
        try:
            return effective_key(space, trial.point, int(seed) if isinstance(seed, int) else None)
        except SpaceError:
            pass  # a point the recorded space no longer resolves: its params say what ran
    return json.dumps(trial.params, sort_keys=True, default=str)


def _check_repeats(record: Record, trials: Sequence[LedgerTrial]) -> list[Violation]:
    """A search never trains one config twice: a seed dimension asks for repeats by giving
    each repeat its own seed, which is part of the config."""
    groups: dict[str, list[LedgerTrial]] = {}
    for t in trials:
        groups.setdefault(config_key(record.space, t), []).append(t)
    out = []
    for group in groups.values():
        if len(group) > 1:
            names = ", ".join(t.trial_id for t in group)
            seed = group[0].params.get("seed")
            out.append(Violation("repeat", f"trials {names} trained the same config (seed {seed})"))
    return out


def _check_pareto(record: Record, trials: Sequence[LedgerTrial]) -> list[Violation]:
    if record.running or record.parent is None:
        return []  # tags follow the ledger in a background thread; without a parent, no objectives
    objs = record.objectives
    if not objs:
        return [Violation("pareto", f"parent run {record.parent.run_id} has no {metrics.OBJECTIVES} "
                                    "tag: the frontier cannot be recomputed")]
    cands = frontier.candidates([t.entry for t in trials], objs, record.curve_candidates, record.constraints)
    expected = frontier.membership(cands, objs)
    first_run: dict[str, RunRecord] = {}
    for run in record.children:
        first_run.setdefault(run.trial_id, run)
    out = []
    for t in trials:
        run = first_run.get(t.trial_id)
        if run is None:
            continue  # child-missing says so
        final, steps = expected.get(t.trial_id, (False, []))
        tagged_final = run.tags.get(metrics.PARETO)
        try:
            tagged_steps = sorted(json.loads(run.tags.get(metrics.PARETO_STEPS, "null")))
        except (TypeError, ValueError):
            tagged_steps = None
        want = "true" if final else "false"
        if tagged_final != want or tagged_steps != sorted(steps):
            out.append(Violation("pareto", f"trial {t.trial_id} (run {run.run_id}) is tagged "
                                           f"pareto={tagged_final} steps={_steps_text(tagged_steps)}; "
                                           f"the ledger's frontier gives pareto={want} "
                                           f"steps={sorted(steps)}"))
    return out


def _check_configs(record: Record, trials: Sequence[LedgerTrial], flight: set[str]) -> list[Violation]:
    """Each child run's ``optimix.config`` tag is its ledger config (``replicates.config_id``):
    the frontier groups a config's seeds by it. Runs logged before the tag existed have none
    (a resumed old search mixes both): the frontier then groups them by their params."""
    from optimix.core import replicates

    runs = {r.trial_id: r for r in record.children}
    out = []
    for t in trials:
        run = runs.get(t.trial_id)
        if run is None or t.trial_id in flight or metrics.CONFIG not in run.tags:
            continue
        want, got = replicates.config_id(t.params), run.tags.get(metrics.CONFIG)
        if got != want:
            out.append(Violation("config", f"trial {t.trial_id} (run {run.run_id}) is tagged "
                                           f"{metrics.CONFIG}={got}; its ledger params give {want}"))
    return out


def _steps_text(steps: list[int] | None) -> str:
    return "missing" if steps is None else str(steps)


def _point_key(point: Mapping[str, Any]) -> str:
    return json.dumps(dict(point), sort_keys=True, default=str)


def _check_optuna(record: Record, trials: Sequence[LedgerTrial], flight: set[str]) -> list[Violation]:
    if record.optuna is None:
        if not trials:
            return []
        return [Violation("optuna-study", f"the journal {record.state_dir / 'optuna.journal'} has no "
                                          f"study {record.experiment!r}, but the ledger has "
                                          f"{len(trials)} trials")]
    out = []
    if not record.running:
        status = record.state.get("status", "not recorded")
        at_point = {_point_key(t.point): t.trial_id for t in trials}
        for ot in record.optuna:
            if ot.state == "RUNNING":
                which = (f" (trial {ot.trial_id})" if ot.trial_id else
                         f" (the point of trial {at_point[_point_key(ot.params)]})"
                         if _point_key(ot.params) in at_point else "")
                out.append(Violation("optuna-running", f"Optuna trial #{ot.number}{which} is RUNNING "
                                                       f"but the search is not (status {status}, no "
                                                       "driver holds its lock)"))
    out += _match_state(record, trials, flight, "COMPLETE", metrics.OK, "optuna-complete")
    out += _match_state(record, trials, flight, "PRUNED", metrics.PRUNED, "optuna-pruned")
    return out


def _match_state(record: Record, trials: Sequence[LedgerTrial], flight: set[str], state: str,
                 status: str, kind: str) -> list[Violation]:
    """The ledger's ``status`` trials are Optuna's ``state`` trials: matched by the
    ``optimix.trial_id`` attr where a trial carries it, else by point (older journals)."""
    optuna = record.optuna or []
    by_id = {t.trial_id: t for t in trials}
    claimed: dict[str, list[OptunaTrial]] = {}
    for ot in optuna:
        if ot.trial_id:
            claimed.setdefault(ot.trial_id, []).append(ot)
    out = []
    for ot in optuna:
        if ot.trial_id and ot.state == state:
            t = by_id.get(ot.trial_id)
            if t is None:
                out.append(Violation(kind, f"Optuna trial #{ot.number} (trial {ot.trial_id}) is {state} "
                                           "but the ledger has no such trial"))
            elif t.status != status:
                out.append(Violation(kind, f"Optuna trial #{ot.number} (trial {ot.trial_id}) is {state} "
                                           f"but the ledger has it {t.status}"))
    loose = []
    for t in trials:
        if t.status != status:
            continue
        if t.trial_id not in claimed:
            loose.append(t)
            continue
        if state in [ot.state for ot in claimed[t.trial_id]] or t.trial_id in flight:
            continue  # (in flight: Optuna may not be told yet)
        numbers = ", ".join(f"#{ot.number} is {ot.state}" for ot in claimed[t.trial_id])
        out.append(Violation(kind, f"trial {t.trial_id} is {status} in the ledger but its Optuna "
                                   f"trial {numbers}"))
    # Trials without the attr: equal points, counted (a point may rightly run twice).
    unclaimed = [ot for ot in optuna if not ot.trial_id]
    wanted = Counter(_point_key(ot.params) for ot in unclaimed if ot.state == state)
    running = Counter(_point_key(ot.params) for ot in unclaimed if ot.state == "RUNNING")
    for t in loose:
        key = _point_key(t.point)
        if wanted[key] > 0:
            wanted[key] -= 1
        elif record.running and running[key] > 0:
            running[key] -= 1
        elif t.trial_id not in flight:
            out.append(Violation(kind, f"trial {t.trial_id} is {status} in the ledger but no {state} "
                                       f"Optuna trial has its point {_point_key(t.point)}"))
    for ot in unclaimed:
        key = _point_key(ot.params)
        if ot.state == state and wanted[key] > 0:
            wanted[key] -= 1
            out.append(Violation(kind, f"Optuna trial #{ot.number} is {state} but no {status} ledger "
                                       f"trial has its point {key}"))
    return out


# ---------------------------------------------------------------------------------------------
# Summaries


def summary(record: Record, violations: Sequence[Violation]) -> str:
    """The last line ``optimix check`` prints."""
    kinds = Counter(v.kind for v in violations)
    verdict = ("no violations" if not violations else
               f"{len(violations)} violation{'s' * (len(violations) != 1)} ("
               + ", ".join(f"{k} {n}" for k, n in kinds.items()) + ")")
    optuna = "no Optuna study" if record.optuna is None else f"{len(record.optuna)} Optuna trials"
    running = ""
    if record.running:
        n = len(in_flight(record, _first_of_each(record.ledger)))
        running = (f", running: {n} trial{'s' * (n != 1)} in flight not judged, and the frontier tags, "
                   "the parent's spent_flops and RUNNING Optuna trials wait until it ends")
    folder = str(record.state_dir)
    if folder.startswith(os.getcwd() + os.sep):
        folder = os.path.relpath(folder)
    return (f"check {record.experiment} ({folder}): {len(_first_of_each(record.ledger))} "
            f"ledger trials, {len(record.children)} MLflow child runs, {optuna}{running}: {verdict}")


def report(record: Record, violations: Sequence[Violation]) -> dict[str, Any]:
    """``optimix check --json``."""
    return {"experiment": record.experiment, "state_dir": str(record.state_dir),
            "tracking_uri": tracking.redact_uri(record.tracking_uri),
            "parent_run_id": record.parent_run_id,
            "running": record.running, "trials": len(_first_of_each(record.ledger)),
            "in_flight": sorted(in_flight(record, _first_of_each(record.ledger))),
            "child_runs": len(record.children),
            "optuna_trials": None if record.optuna is None else len(record.optuna),
            "ok": not violations,
            "violations": [{"kind": v.kind, "detail": v.detail} for v in violations]}
