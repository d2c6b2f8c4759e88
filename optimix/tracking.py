"""MLflow: the one module that talks to it, and the one place that names what is stored.

Layout (see DESIGN.md): one parent run per search (``optimix.role=search``) and one child
run per trial (``optimix.role=trial``, ``mlflow.parentRunId``), with ``optimix.status`` and
``optimix.pareto`` kept current. Only the search driver writes, so a SQLite store is never
written by two processes ("database is locked" cannot happen); a tracking server works too.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

# Tags
ROLE = "optimix.role"
STATUS = "optimix.status"
PARETO = "optimix.pareto"
PARETO_STEPS = "optimix.pareto_steps"
TRIAL_ID = "optimix.trial_id"
OBJECTIVES = "optimix.objectives"
ERROR = "optimix.error"
SPACE = "optimix.space"
BUDGET = "optimix.budget_flops"
NODE = "optimix.node"
POINT = "optimix.point"
STATE_DIR = "optimix.state_dir"
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"

# Statuses of a trial as MLflow shows them (a diverged trial is infeasible, never scored)
OK, FAILED, INFEASIBLE, PRUNED = "ok", "failed", "infeasible", "pruned"


def metric_names(tasks: Iterable[str]) -> dict[str, list[str]]:
    """The metric names a trial logs: objectives are chosen among these."""
    tasks = list(tasks)
    return {
        "acc": [f"acc/{t}" for t in tasks],
        "loss": [f"loss/{t}" for t in tasks],
        "cost": ["train_flops", "params", "non_embedding_params", "tokens"],
        "time": ["wall_s", "train_s", "tokens_per_s"],
    }


def trial_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """Final metrics of a trial result (``TrialResult.to_dict()``), by their MLflow names."""
    from optimix.frontier import final_metrics

    return final_metrics(result)


def resolve_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{dotted.key: value}`` (the params' names)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class TrackingError(RuntimeError):
    """MLflow could not be reached or refused a write; the message is one line."""


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


@dataclass
class SearchRecord:
    run_id: str
    experiment: str
    objectives: list[tuple[str, str]]
    trials: list[TrialRecord] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


class Tracker:
    """Writes a search to MLflow. Create it in the search driver only."""

    def __init__(self, uri: str | None, experiment: str):
        from mlflow.tracking import MlflowClient

        self.uri = resolve_uri(uri)
        self.experiment = experiment
        # A server that is down should cost seconds per write, not MLflow's default minutes of
        # retries: the search keeps its results in its ledger and records them later.
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.client = MlflowClient(tracking_uri=self.uri)
        if self.uri.startswith(("http://", "https://")):
            _probe(self.uri)  # fail in seconds, not after minutes of client retries
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        except Exception as err:  # any store error: say where, in one line
            raise TrackingError(f"MLflow at {self.uri} is not usable: {_one_line(err)}") from None

    # -- parent run --------------------------------------------------------------------------

    def start_search(self, name: str, objectives: str, params: Mapping[str, Any],
                     space_yaml: str, budget: float | None, state_dir: str) -> str:
        tags = {ROLE: "search", OBJECTIVES: objectives, BUDGET: "" if budget is None else f"{budget:g}",
                STATE_DIR: state_dir}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        self._log_params(run_id, params)
        self.client.log_text(run_id, space_yaml, "space.yaml")
        return run_id

    def finish_search(self, run_id: str, summary: Mapping[str, float], failed: bool = False) -> None:
        self._log_metrics(run_id, summary)
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def find_search(self, state_dir: str) -> str | None:
        """The parent run of the search whose state lives in ``state_dir``, if it was created."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{_q(ROLE)} = 'search' and tags.{_q(STATE_DIR)} = '{state_dir}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def reopen_search(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    # -- trials ----------------------------------------------------------------------------

    def find_trial(self, parent_id: str, trial_id: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{_q(PARENT)} = '{parent_id}' and tags.{_q(TRIAL_ID)} = '{trial_id}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def log_trial(self, parent_id: str, record: Mapping[str, Any], with_model: bool = False) -> str:
        """One child run for a finished trial (idempotent by ``trial_id``).

        Params are the config's dotted keys plus ``shape.*``, the shape actually built (with
        ``model.params`` set, the ``model.d_model`` etc. entries are not what ran).
        """
        existing = self.find_trial(parent_id, record["trial_id"])
        if existing:
            return existing
        status = record["status"]
        tags = {ROLE: "trial", PARENT: parent_id, TRIAL_ID: record["trial_id"], STATUS: status,
                PARETO: "false", PARETO_STEPS: "[]"}
        if record.get("error"):
            tags[ERROR] = record["error"][:4000]
        if record.get("node"):
            tags[NODE] = record["node"]
        if record.get("point") is not None:
            tags[POINT] = json.dumps(record["point"])
        result = record["result"]
        # The run is created when the trial has finished: date it from when the trial began.
        started_ms = _now_ms() - int(1000 * float(result.get("wall_s") or 0.0))
        run = self.client.create_run(self.experiment_id, run_name=record["name"], tags=tags,
                                     start_time=started_ms)
        run_id = run.info.run_id
        shape = {f"shape.{k}": v for k, v in result.get("shape", {}).items()}
        self._log_params(run_id, {**record["params"], **shape})
        if status in (OK, PRUNED):
            self._log_metrics(run_id, trial_metrics(result))
        else:  # cost is still known; no accuracy is ever logged for a failed trial
            self._log_metrics(run_id, {k: float(result[k]) for k in ("train_flops", "tokens", "params", "wall_s")})
        self._log_curve(run_id, result.get("curve", []))
        if with_model and record.get("model_dir"):
            self.client.log_artifacts(run_id, record["model_dir"], "model")
        self.client.set_terminated(run_id, "FINISHED" if status in (OK, PRUNED) else "FAILED")
        return run_id

    def log_model(self, run_id: str, model_dir: str) -> None:
        self.client.log_artifacts(run_id, model_dir, "model")

    def set_frontier_tags(self, membership: Mapping[str, tuple[bool, Sequence[int]]]) -> None:
        """Per run: whether its final result is on the frontier, and which of its
        learning-curve steps are (``optimix.pareto_steps``, a JSON list)."""
        for run_id, (final, steps) in membership.items():
            self.client.set_tag(run_id, PARETO, "true" if final else "false")
            self.client.set_tag(run_id, PARETO_STEPS, json.dumps(list(steps)))

    def log_frontier(self, parent_id: str, frontier: Sequence[Mapping[str, Any]],
                     plots: Mapping[str, bytes] | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "frontier.json"
            path.write_text(json.dumps(list(frontier), indent=2))
            self.client.log_artifact(parent_id, str(path))
            for name, payload in (plots or {}).items():
                (Path(tmp) / name).write_bytes(payload)
                self.client.log_artifact(parent_id, str(Path(tmp) / name))

    # -- helpers -------------------------------------------------------------------------

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])

    def _log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if _finite(v)]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start:start + 1000])

    def _log_curve(self, run_id: str, curve: Sequence[Mapping[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        items = []
        for point in curve:
            step = int(point["step"])
            values = {"curve/tokens": point["tokens"], "curve/train_flops": point["train_flops"],
                      "curve/train_loss": point["train_loss"]}
            values.update({f"curve/acc/{t}": v for t, v in point["accuracy"].items()})
            values.update({f"curve/loss/{t}": v for t, v in point["loss"].items()})
            items += [Metric(k, float(v), now, step) for k, v in values.items() if _finite(v)]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start:start + 1000])


# ---------------------------------------------------------------------------------------------
# Reading back


def load_search(uri: str | None, experiment: str | None, run_id: str | None = None) -> SearchRecord:
    """The latest search of an experiment (or ``run_id``) with all its trials."""
    from mlflow.tracking import MlflowClient

    uri = resolve_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        if experiment is None:
            experiments = [e for e in client.search_experiments() if e.name != "Default"]
            if not experiments:
                raise TrackingError(f"no optimix experiment in {uri}")
            found = max(experiments, key=lambda e: e.last_update_time or 0)
        else:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise TrackingError(f"--experiment: no experiment named {experiment!r} in {uri}")
        if run_id:
            parent = client.get_run(run_id)
        else:
            parents = client.search_runs([found.experiment_id], f"tags.{_q(ROLE)} = 'search'",
                                         order_by=["attributes.start_time DESC"], max_results=1)
            if not parents:
                raise TrackingError(f"experiment {found.name!r} has no optimix search")
            parent = parents[0]
        children = []
        token = None
        while True:
            page = client.search_runs([found.experiment_id],
                                      f"tags.{_q(PARENT)} = '{parent.info.run_id}'",
                                      max_results=1000, page_token=token)
            children += list(page)
            token = page.token
            if not token:
                break
    except TrackingError:
        raise
    except Exception as err:
        raise TrackingError(f"MLflow at {uri} is not usable: {_one_line(err)}") from None
    objectives = parse_objectives_tag(parent.data.tags.get(OBJECTIVES, ""))
    trials = [
        TrialRecord(
            run_id=r.info.run_id,
            trial_id=r.data.tags.get(TRIAL_ID, ""),
            status=r.data.tags.get(STATUS, ""),
            pareto=r.data.tags.get(PARETO) == "true",
            params=dict(r.data.params),
            metrics=dict(r.data.metrics),
            name=r.data.tags.get(RUN_NAME, ""),
            point=json.loads(r.data.tags.get(POINT, "{}")),
            pareto_steps=json.loads(r.data.tags.get(PARETO_STEPS, "[]")),
        )
        for r in children
    ]
    try:
        for trial in trials:
            if not trial.pareto_steps:
                continue
            for name in trial.metrics:
                if name.startswith("curve/"):
                    for m in client.get_metric_history(trial.run_id, name):
                        if m.step in trial.pareto_steps:
                            trial.curve.setdefault(m.step, {})[name[len("curve/"):]] = m.value
            for values in trial.curve.values():
                values["params"] = trial.metrics.get("params", math.nan)
    except Exception as err:
        raise TrackingError(f"MLflow at {uri} is not usable: {_one_line(err)}") from None
    return SearchRecord(parent.info.run_id, found.name, objectives, trials, dict(parent.data.tags))


def parse_objectives_tag(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in filter(None, text.split(",")):
        metric, _, mode = part.rpartition(":")
        pairs.append((metric, mode))
    return pairs


def objectives_tag(objectives: Iterable[tuple[str, str]]) -> str:
    return ",".join(f"{metric}:{mode}" for metric, mode in objectives)


def _probe(uri: str, timeout_s: float = 5.0) -> None:
    """A tracking server must answer ``/health`` before any trial is trained."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            response.read(64)
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # behind authentication: reachable; credentials are MLflow's business
        raise TrackingError(f"MLflow at {uri} is not usable: HTTP {err.code} on /health") from None
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(f"MLflow at {uri} is not reachable: {reason}") from None


def _q(tag: str) -> str:
    return f"`{tag}`" if "." in tag else tag


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:6000]


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
