"""Reading a recorded search back from MLflow.

- ``load_search``: a search's parent run and its trials (``SearchRecord``, ``TrialRecord``),
  for ``optimix frontier`` and ``optimix plan``; every request is retried as the Tracker's are.
- ``read_search_runs``: the runs of one search as stored (``SearchRuns``, ``RunRecord``:
  status, end, tags, params, metrics), for ``optimix check``, which compares them with the
  ledger and the Optuna journal.

Every failure is one ``TrackingError`` line without credentials. The names read are the ones
``tracking`` writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimix.core.config import Objective
from optimix.core.metrics import (
    CONFIG,
    CURVE,
    MET,
    OBJECTIVES,
    PARENT,
    PARETO,
    PARETO_STEPS,
    POINT,
    ROLE,
    RUN_NAME,
    STATE_DIR,
    STATUS,
    TRIAL_ID,
    parse_objectives_tag,
)
from optimix.records.mlflow_client import (
    PAGE_SIZE,
    TrackingError,
    Tries,
    all_pages,
    connect,
    one_line,
    redact_uri,
    resolve_uri,
    tag_is,
)

if TYPE_CHECKING:
    from mlflow.entities import Experiment, Run
    from mlflow.tracking import MlflowClient


@dataclass
class TrialRecord:
    """One trial as read back from MLflow."""

    run_id: str
    trial_id: str
    status: str
    pareto: bool
    params: dict[str, str]
    metrics: dict[str, float]
    name: str = ""
    point: dict[str, Any] = field(default_factory=dict)
    pareto_steps: list[int] = field(default_factory=list)
    """Learning-curve steps of this trial on the frontier (besides its final result)."""
    curve: dict[int, dict[str, float]] = field(default_factory=dict)
    """Curve metrics (without the ``curve/`` prefix) at ``pareto_steps``, by step."""
    constraints_met: bool | None = None
    """Whether it met the search's outcome constraints (None: the search had none)."""
    config: str = ""
    """Its config without its seed (``optimix.config``; replicates share it)."""


@dataclass
class SearchRecord:
    run_id: str
    experiment: str
    objectives: list[Objective]
    trials: list[TrialRecord] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    picked: str = ""
    """How it was chosen when no experiment or run was named (empty when one was)."""
    confirm_at: int | None = None
    """Seeds that confirm a frontier config (``search.replicates``); None: replicates off."""


def confirm_at(params: Mapping[str, str]) -> int | None:
    """The seeds that confirm a config, from a search's parent run params (``search.replicates``
    as the search resolved it: ``replicates.settings``)."""
    from optimix.core import replicates
    from optimix.core.config import SearchConfig

    values: dict[str, Any] = {"trials": int(params.get("search.trials", 16))}
    if params.get("search.budget_flops") not in (None, "None", ""):
        values["budget_flops"] = float(params["search.budget_flops"])
    if "search.replicates.seeds" in params:
        values["replicates"] = {"seeds": int(params["search.replicates.seeds"]),
                                "max_share": float(params.get("search.replicates.max_share", 0.3))}
    elif params.get("search.replicates") in ("auto", "off"):
        values["replicates"] = params["search.replicates"]
    else:
        values["replicates"] = "off"  # a search from before replicates
    found = replicates.settings(SearchConfig(**values))
    return found.seeds if found else None


def load_search(uri: str | None, experiment: str | None, run_id: str | None = None,
                storage_path: str | None = None) -> SearchRecord:
    """The latest search of an experiment (or ``run_id``) with all its trials. Without either,
    the last search started from ``storage_path`` (its parent run is tagged with its state
    folder there); failing that, the latest search of the experiment updated last. ``picked``
    says which rule chose it."""
    uri = resolve_uri(uri)
    client = connect(uri)
    tries = Tries(redact_uri(uri))
    picked = ""
    if experiment is None and run_id is None and storage_path is not None:
        run_id, experiment = _from_storage(client, tries, storage_path)
        picked = (f"the last search started from {storage_path}" if run_id else
                  f"no search was started from {storage_path}: the experiment updated last")
    if run_id:
        parent, found = _search_run(client, tries, run_id, experiment)
    else:
        found = _experiment(client, tries, experiment)
        parents = tries("looking up the latest search", lambda: client.search_runs(
            [found.experiment_id], tag_is(ROLE, "search"),
            order_by=["attributes.start_time DESC"], max_results=1))
        if not parents:
            raise TrackingError(f"experiment {found.name!r} has no optimix search")
        parent = parents[0]
    children = all_pages(lambda token: tries("reading the trials' runs", lambda: client.search_runs(
        [found.experiment_id], tag_is(PARENT, parent.info.run_id), max_results=PAGE_SIZE,
        page_token=token)))
    trials = [_trial(r) for r in children]
    for trial in trials:
        _read_curve(client, tries, trial)
    objectives = parse_objectives_tag(parent.data.tags.get(OBJECTIVES, ""))
    return SearchRecord(parent.info.run_id, found.name, objectives, trials, dict(parent.data.tags), picked,
                        confirm_at(parent.data.params))


def _from_storage(client: MlflowClient, tries: Tries, storage_path: str) -> tuple[str | None, str | None]:
    """(parent run id, experiment name) of the search started last from ``storage_path``."""
    root = str(Path(storage_path).resolve())
    ids = [e.experiment_id for e in tries("listing experiments", client.search_experiments)]
    if not ids:
        return None, None
    like = f"tags.`{STATE_DIR}` LIKE '{root.replace(chr(39), '_')}/%'"
    runs = tries("looking up this storage path's searches", lambda: client.search_runs(
        ids, f"{tag_is(ROLE, 'search')} and {like}", order_by=["attributes.start_time DESC"], max_results=1))
    if not runs:
        return None, None
    return runs[0].info.run_id, client.get_experiment(runs[0].info.experiment_id).name


def _search_run(client: MlflowClient, tries: Tries, run_id: str, experiment: str | None) -> tuple[Run, Experiment]:
    """The parent run ``run_id`` of a search and its own experiment (which ``experiment``, if
    given, must name); anything else is one line."""
    from mlflow.exceptions import MlflowException

    def get() -> Run | None:
        try:
            return client.get_run(run_id)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    parent = tries(f"reading run {run_id}", get)
    if parent is None or parent.info.lifecycle_stage == "deleted":
        raise TrackingError(f"--run-id: no run {run_id} in {tries.display_uri}")
    if parent.data.tags.get(ROLE) != "search":
        raise TrackingError(f"--run-id: run {run_id} is not an optimix search's parent run "
                            f"({ROLE}={parent.data.tags.get(ROLE, 'unset')})")
    found = tries(f"reading the experiment of run {run_id}",
                  lambda: client.get_experiment(parent.info.experiment_id))
    if experiment is not None and found.name != experiment:
        raise TrackingError(f"--run-id: run {run_id} is a search of experiment {found.name!r}, "
                            f"not of {experiment!r}")
    return parent, found


def _experiment(client: MlflowClient, tries: Tries, name: str | None) -> Experiment:
    """The experiment named ``name``; without a name, the one updated last."""
    if name is None:
        experiments = [e for e in tries("listing experiments", client.search_experiments) if e.name != "Default"]
        if not experiments:
            raise TrackingError(f"no optimix experiment in {tries.display_uri}")
        return max(experiments, key=lambda e: e.last_update_time or 0)
    found = tries(f"reading experiment {name!r}", lambda: client.get_experiment_by_name(name))
    if found is None:
        raise TrackingError(f"--experiment: no experiment named {name!r} in {tries.display_uri}")
    return found


def _trial(run: Run) -> TrialRecord:
    tags = run.data.tags
    return TrialRecord(
        run_id=run.info.run_id,
        trial_id=tags.get(TRIAL_ID, ""),
        status=tags.get(STATUS, ""),
        pareto=tags.get(PARETO) == "true",
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        name=tags.get(RUN_NAME, ""),
        point=json.loads(tags.get(POINT, "{}")),
        pareto_steps=json.loads(tags.get(PARETO_STEPS, "[]")),
        constraints_met=None if MET not in tags else tags[MET] == "true",
        config=tags.get(CONFIG, ""),
    )


def _read_curve(client: MlflowClient, tries: Tries, trial: TrialRecord) -> None:
    """Fill ``trial.curve``: its learning-curve metrics at its frontier steps."""
    if not trial.pareto_steps:
        return
    for name in trial.metrics:
        if name.startswith(CURVE):
            history = tries(f"reading {name} of run {trial.run_id}",
                            lambda n=name: client.get_metric_history(trial.run_id, n))
            for m in history:
                if m.step in trial.pareto_steps:
                    trial.curve.setdefault(m.step, {})[name[len(CURVE):]] = m.value
    for values in trial.curve.values():
        values["params"] = trial.metrics.get("params", math.nan)


# ---------------------------------------------------------------------------------------------
# The runs of one search, as stored


@dataclass(frozen=True)
class RunRecord:
    """An MLflow run as stored: what ``optimix check`` compares with the ledger."""

    run_id: str
    status: str
    """``RUNNING``, ``FINISHED``, ``FAILED``, ..."""
    ended: bool
    """Whether the run has an end time."""
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def trial_id(self) -> str:
        return self.tags.get(TRIAL_ID, "")

    @classmethod
    def of(cls, run: Run) -> RunRecord:
        return cls(run_id=run.info.run_id, status=run.info.status, ended=run.info.end_time is not None,
                   tags=dict(run.data.tags), params=dict(run.data.params), metrics=dict(run.data.metrics))


@dataclass(frozen=True)
class SearchRuns:
    """The non-deleted runs of one search."""

    parents: list[RunRecord]
    """Search runs of the experiment tagged with the search's state folder."""
    parent: RunRecord | None
    """The parent run (the one named, else the only one tagged); None if there is none."""
    children: list[RunRecord]
    """Runs whose ``mlflow.parentRunId`` is that parent."""


def read_search_runs(uri: str, experiment: str, state_dir: Path, parent_id: str | None) -> SearchRuns:
    """The runs of the search whose state is in ``state_dir`` and whose parent run is
    ``parent_id`` (when known). Nothing is retried and nothing is created: a SQLite file that
    does not exist is an error, not a new store."""
    shown = redact_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise TrackingError(f"--tracking-uri: no MLflow database at {shown}")
    client = connect(uri)
    try:
        return _search_runs(client, experiment, state_dir, parent_id, shown)
    except TrackingError:
        raise
    except Exception as err:  # any store error: one line, where
        raise TrackingError(f"--tracking-uri: MLflow at {shown} is not usable: {one_line(err)}") from None


def _search_runs(client: MlflowClient, experiment: str, state_dir: Path, parent_id: str | None,
                 shown: str) -> SearchRuns:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise TrackingError(f"--experiment: no experiment named {experiment!r} in {shown}")
    ids = [found.experiment_id]
    # The folder is named by its last two parts (<experiment>/<stamp>): storage can be
    # moved or mounted elsewhere without the search becoming another one.
    parents = [r for r in _runs(client, ids, tag_is(ROLE, "search"))
               if Path(r.tags.get(STATE_DIR, "")).parts[-2:] == state_dir.parts[-2:]]
    parent_id = parent_id or (parents[0].run_id if len(parents) == 1 else None)
    if not parent_id:
        return SearchRuns(parents, None, [])
    parent = next((r for r in parents if r.run_id == parent_id), None) or _get_run(client, parent_id)
    return SearchRuns(parents, parent, _runs(client, ids, tag_is(PARENT, parent_id)))


def _runs(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[RunRecord]:
    """Every non-deleted run of the experiments that the filter selects."""
    runs = all_pages(lambda token: client.search_runs(
        experiment_ids, filter_string, max_results=PAGE_SIZE, page_token=token))
    return [RunRecord.of(r) for r in runs]


def _get_run(client: MlflowClient, run_id: str) -> RunRecord | None:
    """The run, unless there is none or it is deleted."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    return None if run.info.lifecycle_stage == "deleted" else RunRecord.of(run)
