"""``optimix check``: a recorded search's ledger, MLflow runs and Optuna journal agree.

A search keeps three records of the same trials: the ledger (``results.jsonl`` in its state
folder, written first), MLflow (one parent run, one child run per trial) and the Optuna
journal (``optuna.journal``). :func:`read` gathers the three into one :class:`Record`;
:func:`check` is pure over it and returns one :class:`Violation` per broken invariant, each
of one of the kinds in :data:`KINDS` and naming the trial it is about.

While the search runs (its state says ``running`` and its driver holds the ``lock`` file),
what is written after the ledger line (the MLflow child run, the frontier tags, Optuna's
``tell``, the parent's ``spent_flops``) may lag behind it: those checks wait until it stops.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optimix import frontier, tracking
from optimix.search.proposals import FLOPS_ATTR, TRIAL_ID_ATTR
from optimix.space import Space, SpaceError

KINDS = {
    "parent": "exactly one MLflow search run is tagged with the state folder, and it is "
              "the one state.json names",
    "ledger-duplicate": "each trial_id is in the ledger once",
    "child-missing": "each ledger trial has a (non-deleted) MLflow child run",
    "child-duplicate": "no ledger trial has two (non-deleted) MLflow child runs",
    "child-incomplete": "the child run is terminated, has the ledger's params and a "
                        "train_flops metric",
    "child-status": "the child's optimix.status tag is the ledger's status",
    "child-stray": "every MLflow child run of the search is a ledger trial",
    "repeat": "no effective config (seed included) is trained twice",
    "pareto": "optimix.pareto and optimix.pareto_steps equal the frontier recomputed from "
              "the ledger",
    "optuna-study": "the journal holds the search's Optuna study",
    "optuna-running": "no Optuna trial is RUNNING while the search is not",
    "optuna-complete": "Optuna's COMPLETE trials are the ledger's ok trials",
    "optuna-pruned": "Optuna's PRUNED trials are the ledger's pruned trials",
    "flops-mlflow": "each child run's train_flops is the ledger's",
    "flops-optuna": "each Optuna trial's optimix.train_flops is the ledger's",
    "flops-parent": "the parent's spent_flops is the ledger's total",
    "flops-budget": "the ledger's total is within optimix.budget_flops",
}

REL_TOL = 1e-6  # FLOPs are floats summed in different orders by different writers
_TERMINATED = ("FINISHED", "FAILED")


@dataclass(frozen=True)
class Violation:
    kind: str
    detail: str

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind

    def line(self) -> str:
        return f"violation: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class LedgerTrial:
    """One trial line of the ledger, as the check reads it."""

    trial_id: str
    status: str
    name: str
    point: dict[str, Any]
    params: dict[str, Any]
    train_flops: float
    entry: Mapping[str, Any]
    """The whole line (``frontier.candidates`` reads its ``result``)."""

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> LedgerTrial:
        result = entry.get("result") or {}
        return cls(trial_id=str(entry["trial_id"]), status=entry.get("status", ""),
                   name=entry.get("name", ""), point=dict(entry.get("point") or {}),
                   params=dict(entry.get("params") or {}),
                   train_flops=float(result.get("train_flops", 0.0)), entry=entry)


@dataclass(frozen=True)
class Run:
    """An MLflow run as the check reads it."""

    run_id: str
    status: str
    """``RUNNING``, ``FINISHED``, ``FAILED``, ..."""
    ended: bool
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def trial_id(self) -> str:
        return self.tags.get(tracking.TRIAL_ID, "")


@dataclass(frozen=True)
class OptunaTrial:
    number: int
    state: str
    """``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING`` or ``WAITING``."""
    params: dict[str, Any]
    trial_id: str | None = None
    train_flops: float | None = None


@dataclass
class Record:
    """Everything :func:`check` reads of one search."""

    state_dir: Path
    experiment: str
    tracking_uri: str
    state: dict[str, Any]
    """``state.json`` (empty if the search stopped before writing it)."""
    ledger: list[LedgerTrial]
    """Trial lines in the order written, repeated lines included."""
    logged: dict[str, str]
    """trial_id -> run id, from the ledger's ``logged`` lines."""
    parents: list[Run]
    """Non-deleted search runs of the experiment tagged with this state folder."""
    parent: Run | None
    """The run ``state.json`` names as the parent (None if there is none)."""
    children: list[Run]
    """Non-deleted runs whose ``mlflow.parentRunId`` is that parent."""
    optuna: list[OptunaTrial] | None
    """The study's trials; None if the journal has no study of this search."""
    running: bool
    """The search is running now (status ``running`` and its lock is held)."""
    space: Space | None = None
    """The search space state.json records (None for older searches, or if it no longer loads)."""
    interrupted_flops: float = 0.0
    """FLOPs of attempts stopped before they finished (the ledger's ``interrupted`` lines)."""

    @property
    def parent_run_id(self) -> str | None:
        return self.state.get("parent_run_id") or (self.parents[0].run_id if len(self.parents) == 1 else None)


# ---------------------------------------------------------------------------------------------
# The invariants (pure)


def check(record: Record) -> list[Violation]:
    """Every violation of the record, ledger order within each kind."""
    trials = _first_of_each(record.ledger)
    out = _check_parent(record)
    out += _check_ledger(record.ledger)
    out += _check_children(record, trials)
    out += _check_repeats(record, trials)
    out += _check_pareto(record, trials)
    out += _check_optuna(record, trials)
    out += _check_flops(record, trials)
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


def _check_children(record: Record, trials: Sequence[LedgerTrial]) -> list[Violation]:
    by_trial: dict[str, list[Run]] = {}
    for run in record.children:
        by_trial.setdefault(run.trial_id, []).append(run)
    out = []
    for t in trials:
        runs = by_trial.get(t.trial_id, [])
        # While the search runs, a trial not yet marked logged may be on its way to MLflow.
        pending = record.running and t.trial_id not in record.logged
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
        tag = run.tags.get(tracking.STATUS)
        if tag != t.status:
            out.append(Violation("child-status", f"trial {t.trial_id} (run {run.run_id}) is tagged "
                                                 f"{tag!r}, the ledger says {t.status!r}"))
    known = {t.trial_id for t in trials}
    for run in record.children:
        if run.trial_id not in known:
            named = f"trial_id {run.trial_id}" if run.trial_id else "no trial_id tag"
            out.append(Violation("child-stray", f"run {run.run_id} ({named}) is a child of the search "
                                                "but not a trial in the ledger"))
    return out


def _incomplete(run: Run, t: LedgerTrial) -> list[str]:
    problems = []
    if run.status not in _TERMINATED or not run.ended:
        problems.append(f"run status {run.status}, not terminated")
    missing = [k for k in t.params if k not in run.params]
    if missing:
        problems.append(f"{len(missing)} params missing ({', '.join(missing[:3])})")
    differ = [k for k, v in t.params.items() if k in run.params and run.params[k] != _param_text(v)]
    if differ:
        problems.append(f"{len(differ)} params differ from the ledger's ({', '.join(differ[:3])})")
    if "train_flops" not in run.metrics:
        problems.append("no train_flops metric")
    return problems


def _param_text(value: Any) -> str:
    """A ledger param as MLflow stores it (``tracking.Tracker._log_params``)."""
    return tracking.param_value(value)


def config_key(space: Space | None, trial: LedgerTrial) -> str:
    """What ``trial`` trained: ``budget.effective_key`` (the key the searcher refuses to
    train twice) where the space is known, else the ledger's params, seed included."""
    if space is not None:
        from optimix.budget import effective_key

        try:
            return effective_key(space, trial.point)
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


def objectives(record: Record) -> list[tuple[str, str]]:
    if record.parent is None:
        return []
    return tracking.parse_objectives_tag(record.parent.tags.get(tracking.OBJECTIVES, ""))


def curve_candidates(record: Record) -> bool:
    """``search.curve_candidates``: from the state's space, else the parent's params."""
    space = record.state.get("space")
    search = space.get("search") if isinstance(space, Mapping) else None
    if isinstance(search, Mapping) and isinstance(search.get("curve_candidates"), bool):
        return search["curve_candidates"]
    text = record.parent.params.get("search.curve_candidates") if record.parent else None
    return text is None or text.lower() != "false"


def budget_flops(record: Record) -> float | None:
    text = record.parent.tags.get(tracking.BUDGET, "") if record.parent else ""
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _check_pareto(record: Record, trials: Sequence[LedgerTrial]) -> list[Violation]:
    if record.running or record.parent is None:
        return []  # tags follow the ledger in a background thread; without a parent, no objectives
    objs = objectives(record)
    if not objs:
        return [Violation("pareto", f"parent run {record.parent.run_id} has no {tracking.OBJECTIVES} "
                                    "tag: the frontier cannot be recomputed")]
    cands = frontier.candidates([t.entry for t in trials], objs, curve_candidates(record))
    expected = frontier.membership(cands, objs)
    first_run: dict[str, Run] = {}
    for run in record.children:
        first_run.setdefault(run.trial_id, run)
    out = []
    for t in trials:
        run = first_run.get(t.trial_id)
        if run is None:
            continue  # child-missing says so
        final, steps = expected.get(t.trial_id, (False, []))
        tagged_final = run.tags.get(tracking.PARETO)
        try:
            tagged_steps = sorted(json.loads(run.tags.get(tracking.PARETO_STEPS, "null")))
        except (TypeError, ValueError):
            tagged_steps = None
        want = "true" if final else "false"
        if tagged_final != want or tagged_steps != sorted(steps):
            out.append(Violation("pareto", f"trial {t.trial_id} (run {run.run_id}) is tagged "
                                           f"pareto={tagged_final} steps={_steps_text(tagged_steps)}; "
                                           f"the ledger's frontier gives pareto={want} "
                                           f"steps={sorted(steps)}"))
    return out


def _steps_text(steps: list[int] | None) -> str:
    return "missing" if steps is None else str(steps)


def _point_key(point: Mapping[str, Any]) -> str:
    return json.dumps(dict(point), sort_keys=True, default=str)


def _check_optuna(record: Record, trials: Sequence[LedgerTrial]) -> list[Violation]:
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
    out += _match_state(record, trials, "COMPLETE", tracking.OK, "optuna-complete")
    out += _match_state(record, trials, "PRUNED", tracking.PRUNED, "optuna-pruned")
    return out


def _match_state(record: Record, trials: Sequence[LedgerTrial], state: str, status: str,
                 kind: str) -> list[Violation]:
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
        states = [ot.state for ot in claimed[t.trial_id]]
        if state in states or (record.running and "RUNNING" in states):
            continue  # told after the ledger line: a running search may be between the two
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
        else:
            out.append(Violation(kind, f"trial {t.trial_id} is {status} in the ledger but no {state} "
                                       f"Optuna trial has its point {_point_key(t.point)}"))
    for ot in unclaimed:
        key = _point_key(ot.params)
        if ot.state == state and wanted[key] > 0:
            wanted[key] -= 1
            out.append(Violation(kind, f"Optuna trial #{ot.number} is {state} but no {status} ledger "
                                       f"trial has its point {key}"))
    return out


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL)


def _check_flops(record: Record, trials: Sequence[LedgerTrial]) -> list[Violation]:
    out = []
    runs: dict[str, Run] = {}
    for run in record.children:
        runs.setdefault(run.trial_id, run)
    for t in trials:
        run = runs.get(t.trial_id)
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
    spent = sum(t.train_flops for t in trials)
    if record.parent is not None and not record.running:
        logged = record.parent.metrics.get("spent_flops")
        if logged is None:
            out.append(Violation("flops-parent", f"parent run {record.parent.run_id} has no spent_flops "
                                                 f"metric (the ledger's total is {spent:.6g}): the search "
                                                 "did not finish; --resume completes it"))
        elif not _close(logged, spent):
            out.append(Violation("flops-parent", f"parent run {record.parent.run_id} logged spent_flops "
                                                 f"{logged:.6g}, the ledger's total is {spent:.6g}"))
    budget = budget_flops(record)
    if budget is not None and spent + record.interrupted_flops > budget * (1 + REL_TOL):
        last = trials[-1].trial_id if trials else "-"
        lost = f" (+{record.interrupted_flops:.6g} in interrupted attempts)" if record.interrupted_flops else ""
        out.append(Violation("flops-budget", f"the ledger's trials spent {spent:.6g} FLOPs{lost}, over "
                                             f"the budget of {budget:.6g} (last trial {last})"))
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
    running = ", running (checks that wait for it to stop skipped)" if record.running else ""
    return (f"check {record.experiment} ({record.state_dir}): {len(_first_of_each(record.ledger))} "
            f"ledger trials, {len(record.children)} MLflow child runs, {optuna}{running}: {verdict}")


def report(record: Record, violations: Sequence[Violation]) -> dict[str, Any]:
    """``optimix check --json``."""
    return {"experiment": record.experiment, "state_dir": str(record.state_dir),
            "tracking_uri": tracking.redact_uri(record.tracking_uri),
            "parent_run_id": record.parent_run_id,
            "running": record.running, "trials": len(_first_of_each(record.ledger)),
            "child_runs": len(record.children),
            "optuna_trials": None if record.optuna is None else len(record.optuna),
            "ok": not violations,
            "violations": [{"kind": v.kind, "detail": v.detail} for v in violations]}


# ---------------------------------------------------------------------------------------------
# Reading the three records


def find_state(storage_path: str, experiment: str | None) -> Path:
    """The latest search's state folder of ``experiment`` (default: of any experiment)."""
    from optimix.search.ledger import SearchState

    storage = Path(storage_path).expanduser().resolve()
    if not storage.is_dir():
        raise SpaceError(f"--storage-path: no folder {storage}")
    if experiment is not None:
        try:
            path = SearchState.latest(storage, experiment).path
        except SpaceError:
            raise SpaceError(f"--experiment: no search of {experiment!r} under {storage}") from None
    else:
        stamps = sorted((p.read_text().strip(), p.parent) for p in storage.glob("*/latest"))
        if not stamps:
            raise SpaceError(f"--storage-path: no search under {storage}")
        stamp, root = stamps[-1]
        path = root / stamp
    if not path.is_dir():
        raise SpaceError(f"--storage-path: the latest search's state folder {path} is missing")
    return path


def read(storage_path: str, experiment: str | None = None, tracking_uri: str | None = None) -> Record:
    """The ledger, MLflow runs and Optuna study of the latest search under ``storage_path``."""
    from optimix.search.ledger import SearchState

    path = find_state(storage_path, experiment)
    search_state = SearchState(path)
    state = search_state.read() or {}
    experiment = state.get("experiment") or experiment
    if experiment is None:
        raise SpaceError(f"--experiment: {path} has no state.json to name its experiment; give it")
    uri = tracking_uri or state.get("tracking_uri") or tracking.resolve_uri(None)
    lines = search_state.entries()
    ledger = [LedgerTrial.from_entry(e) for e in lines if "trial_id" in e]
    logged = {str(e["logged"]): str(e.get("run_id")) for e in lines if "logged" in e}
    # Read while it may run: the lock first, so that a search that ends meanwhile is
    # still taken as running (lagging records excused) rather than the other way round.
    running = state.get("status", "running") == "running" and search_state.running()
    parents, parent, children = _read_mlflow(uri, experiment, path, state.get("parent_run_id"))
    return Record(state_dir=path, experiment=experiment, tracking_uri=uri, state=state,
                  ledger=ledger, logged=logged, parents=parents, parent=parent, children=children,
                  optuna=_read_optuna(search_state.journal, experiment), running=running,
                  space=_space(state.get("space")), interrupted_flops=search_state.lost_flops())


def _space(tree: Any) -> Space | None:
    from optimix.space import build_space

    if not isinstance(tree, Mapping):
        return None
    try:
        return build_space(tree)
    except SpaceError:
        return None


def _read_mlflow(uri: str, experiment: str, path: Path, parent_id: str | None
                 ) -> tuple[list[Run], Run | None, list[Run]]:
    from mlflow.tracking import MlflowClient

    shown = tracking.redact_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise SpaceError(f"--tracking-uri: no MLflow database at {shown}")  # MLflow would make one
    tracking.use_http_defaults()  # an unreachable server: seconds, not minutes of retries
    client = MlflowClient(tracking_uri=uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise SpaceError(f"--experiment: no experiment named {experiment!r} in {shown}")
        ids = [found.experiment_id]
        searches = _all_runs(client, ids, f"tags.`{tracking.ROLE}` = 'search'")
        # The folder is named by its last two parts (<experiment>/<stamp>): storage can be
        # moved or mounted elsewhere without the search becoming another one.
        parents = [r for r in searches
                   if Path(r.tags.get(tracking.STATE_DIR, "")).parts[-2:] == path.parts[-2:]]
        parent_id = parent_id or (parents[0].run_id if len(parents) == 1 else None)
        parent = children = None
        if parent_id:
            parent = next((r for r in parents if r.run_id == parent_id), None)
            if parent is None:
                parent = _get_run(client, parent_id)
            children = _all_runs(client, ids, f"tags.`{tracking.PARENT}` = '{parent_id}'")
    except SpaceError:
        raise
    except Exception as err:  # any store error: one line, where
        raise SpaceError(f"--tracking-uri: MLflow at {shown} is not usable: "
                         f"{tracking.one_line(err)}") from None
    return parents, parent, children or []


def _run(r) -> Run:
    return Run(run_id=r.info.run_id, status=r.info.status, ended=r.info.end_time is not None,
               tags=dict(r.data.tags), params=dict(r.data.params), metrics=dict(r.data.metrics))


def _get_run(client, run_id: str) -> Run | None:
    from mlflow.exceptions import MlflowException

    try:
        r = client.get_run(run_id)
    except MlflowException:
        return None
    return None if r.info.lifecycle_stage == "deleted" else _run(r)


def _all_runs(client, experiment_ids: list[str], filter_string: str) -> list[Run]:
    out, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        out += [_run(r) for r in page]
        token = page.token
        if not token:
            return out


def _read_optuna(journal: Path, study_name: str) -> list[OptunaTrial] | None:
    if not journal.exists():
        return None  # JournalFileBackend would create it
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None
    out = []
    for t in study.get_trials(deepcopy=False):
        flops = t.user_attrs.get(FLOPS_ATTR)
        out.append(OptunaTrial(number=t.number, state=t.state.name, params=dict(t.params),
                               trial_id=t.user_attrs.get(TRIAL_ID_ATTR),
                               train_flops=None if flops is None else float(flops)))
    return out
