"""MLflow: the one module that talks to it, and the one place that names what is stored.

Layout (see DESIGN.md): one parent run per search (``optimix.role=search``) and one child
run per trial (``optimix.role=trial``, ``mlflow.parentRunId``), with ``optimix.status`` and
``optimix.pareto`` kept current. Only the search driver writes, so a SQLite store is never
written by two processes ("database is locked" cannot happen); a tracking server works too.

Records that cannot lie:

- A child run counts as a logged trial only once it is terminated: ``set_terminated`` is its
  last write. A RUNNING child is half-made (a crash or an MLflow error part-way), and the next
  ``log_trial`` of that trial deletes it and logs the trial again.
- A retry never creates a run twice. MLflow's client does not retry (``_HTTP_DEFAULTS``); the
  Tracker does (``_Tries``), and after a failed create it looks the run up by its tags and
  start time before it creates it again. Logging the same params, or the same metric values
  with the same timestamps, again leaves MLflow's SQL stores as they were.
- Every failure is one line within about ``_CALL_BUDGET_S`` seconds: ``TrackingRejected``
  when MLflow refused a write (it names what was refused; sending it again will not help),
  ``TrackingError`` when MLflow could not be reached, failed, rate-limited or did not answer.
- Credentials in a tracking URI never appear in a message (``redact_uri``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from optimix import faults

if TYPE_CHECKING:
    from mlflow.entities import Metric, Param, Run

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
ENDED = "optimix.ended"  # on the parent: finished, SIGINT, SIGTERM, or the error that ended it
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"

# Statuses of a trial as MLflow shows them (a diverged trial is infeasible, never scored)
OK, FAILED, INFEASIBLE, PRUNED = "ok", "failed", "infeasible", "pruned"

# MLflow run statuses after ``set_terminated``: only such a child run is a logged trial.
_TERMINATED = ("FINISHED", "FAILED")


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


def redact_uri(uri: str) -> str:
    """``uri`` fit to print: ``user:password@`` becomes ``***@``; query and fragment are
    dropped (they may carry tokens)."""
    text = uri.split("#", 1)[0].split("?", 1)[0]
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rpartition("@")[2]
    return f"{scheme}://{host}{slash}{path}"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{dotted.key: value}`` (the params' names)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# Set in the environment (unless already set) before MLflow's client is used: it reads them
# at every request.
_HTTP_DEFAULTS = {
    # MLflow's client would retry a failed request on its own, blindly: a runs/create whose
    # answer was lost would be committed twice, and a Retry-After would be slept however long
    # it is. The Tracker retries instead (``_Tries``), and looks a run up before creating it
    # again.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    # A server that accepts a request and never answers costs this many seconds, not minutes.
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
_CALL_BUDGET_S = 30.0
"""A Tracker call starts no new try that could end later than this after the call began."""
_WAIT_BUDGET_S = 10.0
"""Of which at most this is spent pausing between tries."""
_FIRST_PAUSE_S = {"transient": 0.5, "throttled": 1.0}
"""The first pause after a failed try, doubled at each further one. After a 429 the pause
starts at the usual ``Retry-After: 1``: with its own retries off, MLflow's client raises
without the header, so the Tracker cannot read it."""


class TrackingError(RuntimeError):
    """MLflow could not be reached, failed or did not answer; the message is one line.

    Transient: the same write may succeed later (the search keeps results in its ledger).
    """


class TrackingRejected(TrackingError):
    """MLflow refused a write (a 4xx answer such as INVALID_PARAMETER_VALUE): sending it again
    will not help. The message names what was refused; ``reason`` is MLflow's word for it."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


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
    """Writes a search to MLflow. Create it in the search driver only.

    ``uri`` is what MLflow is given; ``display_uri`` is the one to print (no credentials).
    Every method raises ``TrackingError`` (or ``TrackingRejected``) and nothing else from
    MLflow.
    """

    def __init__(self, uri: str | None, experiment: str):
        from mlflow.tracking import MlflowClient

        self.uri = resolve_uri(uri)
        self.display_uri = redact_uri(self.uri)
        self.experiment = experiment
        use_http_defaults()
        self.client = MlflowClient(tracking_uri=self.uri)
        if self.uri.startswith(("http://", "https://")):
            _probe(self.uri)  # fail in seconds, before any trial is trained
        tries = self._tries()
        found = tries(f"reading experiment {experiment!r}",
                      lambda: self.client.get_experiment_by_name(experiment))
        if found is not None:
            self.experiment_id: str = found.experiment_id
        else:
            self.experiment_id = tries(f"creating experiment {experiment!r}",
                                       lambda: self.client.create_experiment(experiment),
                                       found=self._experiment_id)

    # -- parent run --------------------------------------------------------------------------

    def start_search(self, name: str, objectives: str, params: Mapping[str, Any],
                     space_yaml: str, budget: float | None, state_dir: str) -> str:
        tries = self._tries()
        tags = {ROLE: "search", OBJECTIVES: objectives, BUDGET: "" if budget is None else f"{budget:g}",
                STATE_DIR: state_dir}
        run_id = self._create_run(tries, "the search's parent run", name, tags, _now_ms(),
                                  lambda: self._search_runs(state_dir))
        try:
            self._send(tries, run_id, _params(params), "the search's params")
            tries("logging space.yaml", lambda: self.client.log_text(run_id, space_yaml, "space.yaml"))
        except TrackingRejected:
            self._discard(run_id, "the search")  # find_search must not find a half-made parent
            raise
        return run_id

    def finish_search(self, run_id: str, summary: Mapping[str, float], failed: bool = False,
                      ended: str = "") -> None:
        """The parent run's totals and end: FINISHED, or (``failed``) KILLED when a signal
        ``ended`` it and FAILED otherwise, with ``optimix.ended`` saying why."""
        tries = self._tries()
        self._send(tries, run_id, _metrics(summary, _now_ms()), "the search's summary")
        why = (ended or "error") if failed else "finished"
        tries("tagging how the search ended", lambda: self.client.set_tag(run_id, ENDED, why[:5000]))
        status = "FINISHED" if not failed else "KILLED" if why.startswith("SIG") else "FAILED"
        tries("finishing the search's parent run", lambda: self.client.set_terminated(run_id, status))

    def find_search(self, state_dir: str) -> str | None:
        """The parent run of the search whose state lives in ``state_dir``, if it was created."""
        runs = self._tries()(f"looking up the search of {state_dir}", lambda: self._search_runs(state_dir))
        return min(runs, key=_started).info.run_id if runs else None

    def reopen_search(self, run_id: str) -> None:
        self._tries()("reopening the search's parent run",
                      lambda: self.client.update_run(run_id, status="RUNNING"))

    # -- trials ----------------------------------------------------------------------------

    def find_trial(self, parent_id: str, trial_id: str) -> str | None:
        """The child run of a trial once it is complete (terminated); None while there is
        none or only a half-made (RUNNING) one, which ``log_trial`` replaces."""
        runs = self._tries()(f"looking up trial {trial_id}", lambda: self._trial_runs(parent_id, trial_id))
        done = [r for r in runs if r.info.status in _TERMINATED]
        return min(done, key=_started).info.run_id if done else None

    def log_trial(self, parent_id: str, record: Mapping[str, Any], with_model: bool = False) -> str:
        """One complete child run for a finished trial (idempotent by ``trial_id``).

        A terminated child of the trial is returned as it is; a half-made one is deleted and
        the trial logged again. Params are the config's dotted keys plus ``shape.*``, the
        shape actually built (with ``model.params`` set, the ``model.d_model`` etc. entries are
        not what ran).
        """
        trial_id = record["trial_id"]
        what = f"trial {trial_id}"
        tries = self._tries()
        runs = tries(f"looking up {what}", lambda: self._trial_runs(parent_id, trial_id))
        done = [r for r in runs if r.info.status in _TERMINATED]
        if done:
            return min(done, key=_started).info.run_id
        for run in runs:
            log.info("deleting half-made run %s of %s (status %s)", run.info.run_id, what, run.info.status)
            self._delete(tries, run.info.run_id, what)
        status = record["status"]
        tags = {ROLE: "trial", PARENT: parent_id, TRIAL_ID: trial_id, STATUS: status,
                PARETO: "false", PARETO_STEPS: "[]"}
        if record.get("error"):
            tags[ERROR] = record["error"][:4000]
        if record.get("node"):
            tags[NODE] = record["node"]
        if record.get("point") is not None:
            tags[POINT] = json.dumps(record["point"])
        result = record["result"]
        # The run is created when the trial has finished: date it from when the trial began.
        now = _now_ms()
        started_ms = now - int(1000 * float(result.get("wall_s") or 0.0))
        run_id = self._create_run(tries, f"the run of {what}", record["name"], tags, started_ms,
                                  lambda: self._trial_runs(parent_id, trial_id))
        try:
            shape = {f"shape.{k}": v for k, v in result.get("shape", {}).items()}
            self._send(tries, run_id, _params({**record["params"], **shape}), f"the params of {what}")
            faults.kill_at("mid_mlflow")
            if status in (OK, PRUNED):
                final = trial_metrics(result)
            else:  # cost is still known; no accuracy is ever logged for a failed trial
                final = {k: float(result[k]) for k in ("train_flops", "tokens", "params", "wall_s")}
            self._send(tries, run_id, _metrics(final, now), f"the metrics of {what}")
            self._send(tries, run_id, _curve(result.get("curve", []), now), f"the learning curve of {what}")
            if with_model and record.get("model_dir"):
                tries(f"uploading the model of {what}",
                      lambda: self.client.log_artifacts(run_id, record["model_dir"], "model"))
            # Last: from here on the run counts as logged.
            tries(f"finishing the run of {what}", lambda: self.client.set_terminated(
                run_id, "FINISHED" if status in (OK, PRUNED) else "FAILED"))
        except TrackingRejected:
            self._discard(run_id, what)  # it can never be completed: leave no half-made run
            raise
        return run_id

    def remove_strays(self, parent_id: str, logged: Mapping[str, str]) -> int:
        """Delete every child run of the search that is not the one the ledger logged its
        trial to (``logged``: trial_id -> run id). A create that a slow server committed after
        the client had given up on it leaves such a twin; the ledger says which run counts.
        Returns how many were deleted."""
        tries = self._tries()
        keep = set(logged.values())
        runs, token = [], None
        while True:
            page = tries("listing the search's runs", lambda t=token: self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.{_q(PARENT)} = '{parent_id}'",
                max_results=1000, page_token=t))
            runs += list(page)
            token = page.token
            if not token:
                break
        strays = [r for r in runs if r.info.run_id not in keep]
        for run in strays:
            log.info("deleting run %s: not the ledger's run of trial %s", run.info.run_id,
                     run.data.tags.get(TRIAL_ID, "?"))
            self._delete(tries, run.info.run_id, f"trial {run.data.tags.get(TRIAL_ID, '?')}")
        return len(strays)

    def log_model(self, run_id: str, model_dir: str) -> None:
        self._tries()(f"uploading the model of run {run_id}",
                      lambda: self.client.log_artifacts(run_id, model_dir, "model"))

    def set_frontier_tags(self, membership: Mapping[str, tuple[bool, Sequence[int]]]) -> None:
        """Per run: whether its final result is on the frontier, and which of its
        learning-curve steps are (``optimix.pareto_steps``, a JSON list)."""
        from mlflow.entities import RunTag

        tries = self._tries()
        for i, (run_id, (final, steps)) in enumerate(membership.items()):
            if i == 1:
                faults.kill_at("mid_tags")
            tags = [RunTag(PARETO, "true" if final else "false"), RunTag(PARETO_STEPS, json.dumps(list(steps)))]
            tries(f"tagging run {run_id}", lambda r=run_id, t=tags: self.client.log_batch(r, tags=t))

    def log_frontier(self, parent_id: str, frontier: Sequence[Mapping[str, Any]],
                     plots: Mapping[str, bytes] | None = None) -> None:
        tries = self._tries()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "frontier.json"
            path.write_text(json.dumps(list(frontier), indent=2))
            tries("uploading frontier.json", lambda: self.client.log_artifact(parent_id, str(path)))
            for name, payload in (plots or {}).items():
                (Path(tmp) / name).write_bytes(payload)
                tries(f"uploading {name}", lambda n=name: self.client.log_artifact(parent_id, str(Path(tmp) / n)))

    # -- helpers -------------------------------------------------------------------------

    def _tries(self) -> _Tries:
        return _Tries(self.display_uri)

    def _experiment_id(self) -> str | None:
        found = self.client.get_experiment_by_name(self.experiment)
        return found.experiment_id if found is not None else None

    def _search_runs(self, state_dir: str) -> list[Run]:
        return list(self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{_q(ROLE)} = 'search' and tags.{_q(STATE_DIR)} = '{state_dir}'",
            max_results=100,
        ))

    def _trial_runs(self, parent_id: str, trial_id: str) -> list[Run]:
        """Every non-deleted child run of the trial, complete or not."""
        return list(self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{_q(PARENT)} = '{parent_id}' and tags.{_q(TRIAL_ID)} = '{trial_id}'",
            max_results=100,
        ))

    def _create_run(self, tries: _Tries, what: str, name: str, tags: Mapping[str, str],
                    started_ms: int, same_tags: Callable[[], list[Run]]) -> str:
        """Create a run at most once: runs with ``same_tags`` and this start time are ours.

        After a failed create the run is looked up before it is created again (the server may
        have committed it and lost only the answer). Duplicates left by MLflow's own retries,
        when ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` is set above 0, are deleted.
        """
        def committed() -> list[Run]:
            return sorted((r for r in same_tags() if r.info.start_time == started_ms
                           and r.info.status == "RUNNING"), key=lambda r: r.info.run_id)

        def ours() -> str | None:
            runs = committed()
            return runs[0].info.run_id if runs else None

        run_id = tries(f"creating {what}", lambda: self.client.create_run(
            self.experiment_id, run_name=name, tags=dict(tags), start_time=started_ms).info.run_id,
            found=ours)
        for run in tries(f"looking up {what}", committed):
            if run.info.run_id != run_id:
                log.info("deleting run %s, a duplicate of %s (%s)", run.info.run_id, run_id, what)
                self._delete(tries, run.info.run_id, what)
        return run_id

    def _delete(self, tries: _Tries, run_id: str, what: str) -> None:
        tries(f"deleting run {run_id} of {what}", lambda: self.client.delete_run(run_id))

    def _discard(self, run_id: str, what: str) -> None:
        """Delete a run that cannot be completed, once, without retries; say so if it fails."""
        try:
            self.client.delete_run(run_id)
        except Exception as err:  # the next log_trial of the trial deletes it
            log.warning("could not delete half-made run %s of %s: %s", run_id, what, one_line(err))

    def _send(self, tries: _Tries, run_id: str, items: Sequence[Param | Metric], what: str) -> None:
        """Log params or metrics in batches. A rejected batch is narrowed down to the item
        MLflow refuses, which the error names."""
        from mlflow.entities import Param

        size = 100 if items and isinstance(items[0], Param) else 1000  # MLflow's batch limits
        for start in range(0, len(items), size):
            batch = list(items[start:start + size])
            try:
                tries(f"logging {what}", lambda b=batch: self._log_batch(run_id, b))
            except TrackingRejected as whole:
                item, err = self._refused_item(tries, run_id, batch, whole)
                if item is None:
                    raise
                raise TrackingRejected(f"MLflow at {self.display_uri} rejected {_describe(item)} "
                                       f"in {what}: {err.reason}", err.reason) from None

    def _refused_item(self, tries: _Tries, run_id: str, batch: list[Param | Metric],
                      err: TrackingRejected) -> tuple[Param | Metric | None, TrackingRejected]:
        """The first item of a rejected batch that MLflow rejects alone, by halving the batch
        (the halves it accepts are logged: logging them again later changes nothing). None
        when each half is accepted on its own."""
        while len(batch) > 1:
            half = len(batch) // 2
            for part in (batch[:half], batch[half:]):
                try:
                    tries(f"logging {len(part)} items", lambda p=part: self._log_batch(run_id, p))
                except TrackingRejected as refused:
                    batch, err = part, refused
                    break
            else:
                return None, err
        return batch[0], err

    def _log_batch(self, run_id: str, items: Sequence[Param | Metric]) -> None:
        from mlflow.entities import Metric, Param

        self.client.log_batch(run_id, params=[i for i in items if isinstance(i, Param)],
                              metrics=[i for i in items if isinstance(i, Metric)])


T = TypeVar("T")


@dataclass(frozen=True)
class _Fault:
    """What went wrong with one request, as the Tracker acts on it."""

    kind: Literal["rejected", "throttled", "timeout", "transient"]
    detail: str
    """One line, without credentials."""
    status: int | None = None
    """The HTTP status (or the store's equivalent) when there was an answer."""
    network: bool = False
    """Whether the request failed in the network (no answer came back)."""


class _Tries:
    """The tries of one Tracker call.

    A failed request is sent again after a pause (0.5 s, then doubled; 1 s, doubled, after a
    429) while at most ``_WAIT_BUDGET_S`` has been spent pausing and a full request can still
    end within ``_CALL_BUDGET_S`` of the call's start. It is not sent again when MLflow
    rejected it (``TrackingRejected``) or did not answer in time (a hung server would cost
    another full timeout). With ``found``, a write that is not idempotent is looked up after
    each pause and not sent again when it took effect.
    """

    def __init__(self, display_uri: str):
        self.display_uri = display_uri
        self.started = time.monotonic()
        self.waited_s = 0.0
        self.pause_s = dict(_FIRST_PAUSE_S)

    def __call__(self, what: str, send: Callable[[], T], found: Callable[[], T | None] | None = None) -> T:
        while True:
            try:
                return send()
            except Exception as err:  # MLflow's, requests', a store's: all classified
                fault = _fault(err)
            pause = self._pause(fault)
            if pause is None:
                raise self._error(fault, what) from None
            log.info("MLflow at %s: %s (%s); trying again in %.1f s", self.display_uri, fault.detail,
                     what, pause)
            time.sleep(pause)
            self.waited_s += pause
            if found is not None:
                done = self(f"checking whether {what} took effect", found)
                if done is not None:
                    return done

    def _pause(self, fault: _Fault) -> float | None:
        if fault.kind not in self.pause_s:
            return None
        pause = self.pause_s[fault.kind]
        if self.waited_s + pause > _WAIT_BUDGET_S:
            return None
        if time.monotonic() + pause + _request_timeout_s() > self.started + _CALL_BUDGET_S:
            return None
        self.pause_s[fault.kind] = 2 * pause
        return pause

    def _error(self, fault: _Fault, what: str) -> TrackingError:
        at = f"MLflow at {self.display_uri}"
        if fault.kind == "rejected":
            return TrackingRejected(f"{at} rejected {what}: {fault.detail}", fault.detail)
        if fault.kind == "timeout":
            return TrackingError(f"{at} did not answer within {_request_timeout_s():g} s ({what})")
        if fault.kind == "throttled":
            return TrackingError(f"{at} is rate-limiting requests (HTTP 429 after {self.waited_s:.0f} s "
                                 f"of pauses) ({what})")
        if fault.network and fault.status is None:
            return TrackingError(f"{at} is not reachable ({what}): {fault.detail}")
        answered = f"answered HTTP {fault.status}" if fault.network else "failed"
        return TrackingError(f"{at} {answered} ({what}): {fault.detail}")


def _fault(err: BaseException) -> _Fault:
    """Classify a failed request: 4xx (not 408 or 429) is a rejection; 429 is throttling; a
    timeout is a timeout; anything else (refused, reset, 5xx, a store error) is transient."""
    import requests
    import urllib3.exceptions
    from mlflow.exceptions import MlflowException, RestException

    chain = _chain(err)
    network = any(isinstance(x, (requests.RequestException, urllib3.exceptions.HTTPError, OSError))
                  for x in chain)
    # With its retries off, MLflow's client raises urllib3's "too many 500 error responses"
    # for an answer in its retry codes (408, 429, 5xx): the status is only in that text.
    pattern = re.escape(urllib3.exceptions.ResponseError.SPECIFIC_ERROR).replace(
        re.escape("{status_code}"), r"(\d{3})")
    status = next((int(m.group(1)) for x in chain if isinstance(x, urllib3.exceptions.ResponseError)
                   and (m := re.search(pattern, str(x)))), None)
    if status is None and isinstance(err, MlflowException) and (isinstance(err, RestException) or not network):
        status = err.get_http_status_code()  # the server answered, or the store itself refused
        network = isinstance(err, RestException)
    if any(isinstance(x, (TimeoutError, requests.Timeout, urllib3.exceptions.TimeoutError)) for x in chain):
        return _Fault("timeout", one_line(chain[-1]), None, True)
    if status == 429:
        return _Fault("throttled", "HTTP 429", status, network)
    if status is not None and 400 <= status < 500 and status != 408:
        return _Fault("rejected", _reason(err), status, network)
    detail = one_line(chain[-1]) if network and len(chain) > 1 else one_line(err)
    return _Fault("transient", detail, status, network)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and what caused it, outermost first (urllib3 keeps the cause in ``reason``)."""
    chain: list[BaseException] = []
    current: object = err
    while isinstance(current, BaseException) and current not in chain and len(chain) < 20:
        chain.append(current)
        current = current.__cause__ or current.__context__ or getattr(current, "reason", None)
    return chain


def _reason(err: BaseException) -> str:
    """MLflow's error code and message, one line (``INVALID_PARAMETER_VALUE: ...``)."""
    from mlflow.exceptions import MlflowException

    text = _scrub(str(err.message if isinstance(err, MlflowException) else err)).strip()
    text = text.splitlines()[0] if text else ""
    code = getattr(err, "error_code", "")
    if code and not text.startswith(code):
        text = f"{code}: {text}"
    return text[:300]


def _describe(item: Param | Metric) -> str:
    """``metric 'acc/…' (264 characters)``: what a rejection names."""
    from mlflow.entities import Param

    kind = "param" if isinstance(item, Param) else "metric"
    key = item.key
    if len(key) <= 80:
        return f"{kind} {key!r}"
    return f"{kind} {key[:60] + '…'!r} ({len(key)} characters)"


def _params(params: Mapping[str, Any]) -> list[Param]:
    from mlflow.entities import Param

    return [Param(k, param_value(v)) for k, v in params.items()]


def _metrics(metrics: Mapping[str, Any], now_ms: int, step: int = 0) -> list[Metric]:
    """Finite values only. Built once per call: a retry sends the same timestamps, which
    MLflow's SQL stores do not record twice."""
    from mlflow.entities import Metric

    return [Metric(k, float(v), now_ms, step) for k, v in metrics.items() if _finite(v)]


def _curve(curve: Sequence[Mapping[str, Any]], now_ms: int) -> list[Metric]:
    items = []
    for point in curve:
        values = {"curve/tokens": point["tokens"], "curve/train_flops": point["train_flops"],
                  "curve/train_loss": point["train_loss"]}
        values.update({f"curve/acc/{t}": v for t, v in point["accuracy"].items()})
        values.update({f"curve/loss/{t}": v for t, v in point["loss"].items()})
        items += _metrics(values, now_ms, int(point["step"]))
    return items


def _started(run: Run) -> tuple[int, str]:
    return run.info.start_time or 0, run.info.run_id


def use_http_defaults() -> None:
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _request_timeout_s() -> float:
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT

    return float(MLFLOW_HTTP_REQUEST_TIMEOUT.get())


# ---------------------------------------------------------------------------------------------
# Reading back


def load_search(uri: str | None, experiment: str | None, run_id: str | None = None) -> SearchRecord:
    """The latest search of an experiment (or ``run_id``) with all its trials."""
    from mlflow.tracking import MlflowClient

    uri = resolve_uri(uri)
    shown = redact_uri(uri)
    use_http_defaults()
    client = MlflowClient(tracking_uri=uri)
    tries = _Tries(shown)
    if experiment is None:
        experiments = [e for e in tries("listing experiments", client.search_experiments) if e.name != "Default"]
        if not experiments:
            raise TrackingError(f"no optimix experiment in {shown}")
        found = max(experiments, key=lambda e: e.last_update_time or 0)
    else:
        found = tries(f"reading experiment {experiment!r}", lambda: client.get_experiment_by_name(experiment))
        if found is None:
            raise TrackingError(f"--experiment: no experiment named {experiment!r} in {shown}")
    if run_id:
        parent = tries(f"reading run {run_id}", lambda: client.get_run(run_id))
    else:
        parents = tries("looking up the latest search", lambda: client.search_runs(
            [found.experiment_id], f"tags.{_q(ROLE)} = 'search'",
            order_by=["attributes.start_time DESC"], max_results=1))
        if not parents:
            raise TrackingError(f"experiment {found.name!r} has no optimix search")
        parent = parents[0]
    children: list[Run] = []
    token = None
    while True:
        page = tries("reading the trials' runs", lambda t=token: client.search_runs(
            [found.experiment_id], f"tags.{_q(PARENT)} = '{parent.info.run_id}'",
            max_results=1000, page_token=t))
        children += list(page)
        token = page.token
        if not token:
            break
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
    for trial in trials:
        if not trial.pareto_steps:
            continue
        for name in trial.metrics:
            if name.startswith("curve/"):
                history = tries(f"reading {name} of run {trial.run_id}",
                                lambda r=trial.run_id, n=name: client.get_metric_history(r, n))
                for m in history:
                    if m.step in trial.pareto_steps:
                        trial.curve.setdefault(m.step, {})[name[len("curve/"):]] = m.value
        for values in trial.curve.values():
            values["params"] = trial.metrics.get("params", math.nan)
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
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]  # /health needs no credentials
    health = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            response.read(64)
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # behind authentication: reachable; credentials are MLflow's business
        raise TrackingError(f"MLflow at {redact_uri(uri)} is not usable: HTTP {err.code} on /health") from None
    except (OSError, ValueError) as err:
        reason = _scrub(str(getattr(err, "reason", err)))
        raise TrackingError(f"MLflow at {redact_uri(uri)} is not reachable: {reason}") from None


def _q(tag: str) -> str:
    return f"`{tag}`" if "." in tag else tag


def param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:6000]


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _now_ms() -> int:
    return int(time.time() * 1000)


_USERINFO = re.compile(r"(?<=://)[^\s/@'\"]+@")
_URI_QUERY = re.compile(r"(\w://[^\s'\"?#]*)[?#][^\s'\")]*")


def _scrub(text: str) -> str:
    """``text`` with every URI in it redacted (as ``redact_uri`` does): MLflow's errors quote
    the request's URL, credentials included."""
    return _URI_QUERY.sub(r"\1", _USERINFO.sub("***@", text))


def one_line(err: BaseException) -> str:
    text = _scrub(str(err)).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
