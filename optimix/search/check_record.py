"""What ``optimix check`` reads of a recorded search (its ledger, MLflow runs and Optuna
study), and what it can find wrong (:data:`KINDS`, :class:`Violation`).

:func:`read` gathers the three records of the latest search under a storage folder into one
:class:`Record` (the state folder and journal here, the MLflow runs through
``records.read_search_runs``); ``check.check`` is pure over it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optimix.core import metrics
from optimix.core.config import Objective, SpaceError
from optimix.core.entry import LedgerEntry
from optimix.core.metrics import FLOPS_ATTR, TRIAL_ID_ATTR
from optimix.core.space import Space
from optimix.records.mlflow_client import TrackingError, resolve_uri
from optimix.records.records import RunRecord, read_search_runs

KINDS = {
    "state": "a search with a ledger has its state.json",
    "ledger-malformed": "every ledger line is a trial, logged or interrupted line optimix writes",
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
              "the ledger (a config's seeds at their mean)",
    "config": "each child's optimix.config tag, where it has one, is its ledger config without "
              "the seed (what groups a config's seeds)",
    "optuna-study": "the journal holds the search's Optuna study",
    "optuna-running": "no Optuna trial is RUNNING while the search is not",
    "optuna-complete": "Optuna's COMPLETE trials are the ledger's ok trials",
    "optuna-pruned": "Optuna's PRUNED trials are the ledger's pruned trials",
    "flops-mlflow": "each child run's train_flops is the ledger's",
    "metric-mlflow": "each child run's other final metrics (acc/<task>, loss/<task>, params, "
                     "tokens, timings) are the ledger's",
    "point": "each ledger trial's point is its own params', its child run's and its Optuna "
             "trial's",
    "flops-optuna": "each Optuna trial's optimix.train_flops is the ledger's",
    "flops-parent": "the parent's spent_flops is the ledger's total",
    "flops-budget": "the ledger's total is within optimix.budget_flops",
}

REL_TOL = 1e-6  # FLOPs are floats summed in different orders by different writers


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
    entry: LedgerEntry
    """The whole line (``frontier.candidates`` reads its ``result``)."""

    @classmethod
    def from_entry(cls, line: Mapping[str, Any]) -> LedgerTrial:
        """A trial line of the ledger (checked by ``ledger.parse_line``)."""
        entry = LedgerEntry.from_json(line)
        return cls(trial_id=entry.trial_id, status=entry.status, name=entry.name, point=entry.point,
                   params=entry.params, train_flops=entry.train_flops, entry=entry)


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
    """Everything ``check.check`` reads of one search."""

    state_dir: Path
    experiment: str
    tracking_uri: str
    state: dict[str, Any]
    """``state.json`` (empty if the search stopped before writing it)."""
    ledger: list[LedgerTrial]
    """Trial lines in the order written, repeated lines included."""
    logged: dict[str, str]
    """trial_id -> run id, from the ledger's ``logged`` lines."""
    parents: list[RunRecord]
    """Non-deleted search runs of the experiment tagged with this state folder."""
    parent: RunRecord | None
    """The run ``state.json`` names as the parent (None if there is none)."""
    children: list[RunRecord]
    """Non-deleted runs whose ``mlflow.parentRunId`` is that parent."""
    optuna: list[OptunaTrial] | None
    """The study's trials; None if the journal has no study of this search."""
    running: bool
    """The search is running now (status ``running`` and its lock is held)."""
    space: Space | None = None
    """The search space state.json records (None for older searches, or if it no longer loads)."""
    interrupted_flops: float = 0.0
    """FLOPs of attempts stopped before they finished (the ledger's ``interrupted`` lines)."""
    state_found: bool = True
    """Whether the state folder has its ``state.json``."""
    ledger_errors: list[str] = field(default_factory=list)
    """One line for each malformed ledger line (``ledger.LedgerError``); the rest is read."""

    @property
    def parent_run_id(self) -> str | None:
        return self.state.get("parent_run_id") or (self.parents[0].run_id if len(self.parents) == 1 else None)

    @property
    def objectives(self) -> list[Objective]:
        if self.parent is None:
            return []
        return metrics.parse_objectives_tag(self.parent.tags.get(metrics.OBJECTIVES, ""))

    @property
    def constraints(self) -> list[metrics.Constraint]:
        """The search's outcome constraints, as its parent run is tagged (none without one)."""
        if self.parent is None:
            return []
        return metrics.parse_constraints_tag(self.parent.tags.get(metrics.CONSTRAINTS, ""))

    @property
    def curve_candidates(self) -> bool:
        """``search.curve_candidates``: from the state's space, else the parent's params."""
        space = self.state.get("space")
        search = space.get("search") if isinstance(space, Mapping) else None
        if isinstance(search, Mapping) and isinstance(search.get("curve_candidates"), bool):
            return search["curve_candidates"]
        text = self.parent.params.get("search.curve_candidates") if self.parent else None
        return text is None or text.lower() != "false"

    @property
    def budget_flops(self) -> float | None:
        text = self.parent.tags.get(metrics.BUDGET, "") if self.parent else ""
        try:
            return float(text) if text else None
        except ValueError:
            return None


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
    """The ledger, MLflow runs and Optuna study of the latest search under ``storage_path``.

    A running search writes the ledger first, then Optuna, then MLflow: they are read the
    other way round (MLflow, Optuna, the ledger last), so that everything MLflow and Optuna
    hold of it is in the ledger read after them. What the ledger holds that they do not yet
    is in flight (``check``)."""
    from optimix.search.ledger import SearchState

    path = find_state(storage_path, experiment)
    search_state = SearchState(path)
    found = search_state.read()
    state = found or {}
    # Without state.json (deleted, or a search stopped before writing it), the folder's name.
    experiment = state.get("experiment") or experiment or path.parent.name
    uri = tracking_uri or state.get("tracking_uri") or resolve_uri(None)
    # The lock first, so that a search that ends meanwhile is still taken as running
    # (lagging records excused) rather than the other way round.
    running = state.get("status", "running") == "running" and search_state.running()
    try:
        runs = read_search_runs(uri, experiment, path, state.get("parent_run_id"))
    except TrackingError as err:
        raise SpaceError(str(err)) from None
    optuna = _read_optuna(search_state.journal, experiment)
    lines, errors = search_state.read_lines()
    ledger = [LedgerTrial.from_entry(e) for e in lines if "trial_id" in e]
    logged = {str(e["logged"]): str(e["run_id"]) for e in lines if "logged" in e}
    lost = sum(float(e["train_flops"]) for e in lines if "interrupted" in e)
    return Record(state_dir=path, experiment=experiment, tracking_uri=uri, state=state,
                  ledger=ledger, logged=logged, parents=runs.parents, parent=runs.parent,
                  children=runs.children, optuna=optuna, running=running,
                  space=_space(state.get("space")), interrupted_flops=lost,
                  state_found=found is not None, ledger_errors=[str(e) for e in errors])


def _space(tree: Any) -> Space | None:
    from optimix.core.space import build_space

    if not isinstance(tree, Mapping):
        return None
    try:
        return build_space(tree)
    except SpaceError:
        return None


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
