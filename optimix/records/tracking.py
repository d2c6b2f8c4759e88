"""MLflow: writing a search (the names it writes under are ``optimix.core.metrics``'s).

Layout (see README.md): one parent run per search (``optimix.role=search``) and one child
run per trial (``optimix.role=trial``, ``mlflow.parentRunId``), with ``optimix.status`` and
``optimix.pareto`` kept current. Only the search driver writes, so a SQLite store is never
written by two processes ("database is locked" cannot happen); a tracking server works too.

Three modules talk to MLflow: this one (the ``Tracker``, which writes), ``records`` (which
reads a search back) and ``mlflow_client`` (the client, one-line errors, bounded retries).

Records that cannot lie:

- A child run counts as a logged trial only once it is terminated: ``set_terminated`` is its
  last write. A RUNNING child is half-made (a crash or an MLflow error part-way), and the next
  ``log_trial`` of that trial deletes it and logs the trial again.
- A retry never creates a run twice: after a failed create the Tracker looks the run up by
  its tags and start time before it creates it again. Logging the same params, or the same
  metric values with the same timestamps, again leaves MLflow's SQL stores as they were.
- Every failure is one line within about ``mlflow_client.CALL_BUDGET_S`` seconds
  (``TrackingError``, or ``TrackingRejected`` when MLflow refused a write), and credentials
  in a tracking URI never appear in it.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimix.core import faults, metrics, replicates
from optimix.core.config import flatten as flatten  # imported from here elsewhere
from optimix.core.entry import LedgerEntry
from optimix.core.metrics import (  # noqa: F401 (imported from here elsewhere too)
    BUDGET,
    CONSTRAINTS,
    ENDED,
    ERROR,
    FAILED,
    MET,
    NODE,
    OBJECTIVES,
    OK,
    PARENT,
    PARETO,
    PARETO_STEPS,
    POINT,
    PRUNED,
    ROLE,
    STATE_DIR,
    STATUS,
    TERMINATED,
    TRIAL_ID,
)
from optimix.records.mlflow_client import (
    PAGE_SIZE,
    TrackingRejected,
    Tries,
    all_pages,
    connect,
    one_line,
    probe,
    redact_uri,
    resolve_uri,
    send_items,
    tag_is,
)
from optimix.records.mlflow_client import (
    TrackingError as TrackingError,  # imported from here elsewhere
)

if TYPE_CHECKING:
    from mlflow.entities import Metric, Param, Run

log = logging.getLogger(__name__)

def param_value(value: Any) -> str:
    """A param's value as it is stored in MLflow."""
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:6000]


# ---------------------------------------------------------------------------------------------
# Writing a search


class Tracker:
    """Writes a search to MLflow. Create it in the search driver only.

    ``uri`` is what MLflow is given; ``display_uri`` is the one to print (no credentials).
    Every method raises ``TrackingError`` (or ``TrackingRejected``) and nothing else from
    MLflow.
    """

    def __init__(self, uri: str | None, experiment: str):
        self.uri = resolve_uri(uri)
        self.display_uri = redact_uri(self.uri)
        self.experiment = experiment
        self.client = connect(self.uri)
        if self.uri.startswith(("http://", "https://")):
            probe(self.uri)  # fail in seconds, before any trial is trained
        tries = self._tries()
        found = tries(f"reading experiment {experiment!r}",
                      lambda: self.client.get_experiment_by_name(experiment))
        if found is not None:
            self.experiment_id: str = found.experiment_id
            if EXPERIMENT_KIND not in found.tags:  # an experiment made elsewhere: the UI infers
                tries("tagging the experiment's kind", lambda: self.client.set_experiment_tag(
                    self.experiment_id, EXPERIMENT_KIND, MODEL_DEVELOPMENT))
        else:
            self.experiment_id = tries(f"creating experiment {experiment!r}",
                                       lambda: self.client.create_experiment(
                                           experiment, tags={EXPERIMENT_KIND: MODEL_DEVELOPMENT}),
                                       found=self._experiment_id)

    # -- parent run --------------------------------------------------------------------------

    def start_search(self, name: str, objectives: str, params: Mapping[str, Any],
                     space_yaml: str, budget: float | None, state_dir: str, constraints: str = "") -> str:
        tries = self._tries()
        tags = {ROLE: "search", OBJECTIVES: objectives, BUDGET: "" if budget is None else f"{budget:g}",
                STATE_DIR: state_dir}
        if constraints:
            tags[CONSTRAINTS] = constraints
        run_id = self._create_run(tries, "the search's parent run", name, tags, _now_ms(),
                                  lambda: self._search_runs(state_dir))
        try:
            send_items(self.client, tries, run_id, _params(params), "the search's params")
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
        send_items(self.client, tries, run_id, _metrics(summary, _now_ms()), "the search's summary")
        why = (ended or "error") if failed else "finished"
        tries("tagging how the search ended", lambda: self.client.set_tag(run_id, ENDED, why[:5000]))
        status = "FINISHED" if not failed else "KILLED" if why.startswith("SIG") else "FAILED"
        tries("finishing the search's parent run", lambda: self.client.set_terminated(run_id, status))

    def find_search(self, state_dir: str) -> str | None:
        """The parent run of the search whose state lives in ``state_dir``, if it was created."""
        runs = self._tries()(f"looking up the search of {state_dir}", lambda: self._search_runs(state_dir))
        return min(runs, key=_started).info.run_id if runs else None

    def set_budget(self, run_id: str, budget: float) -> None:
        """The search's FLOPs budget grew (``optimix frontier --confirm``): its parent run says so."""
        self._tries()("updating the search's budget",
                      lambda: self.client.set_tag(run_id, BUDGET, f"{budget:g}"))

    def reopen_search(self, run_id: str) -> None:
        self._tries()("reopening the search's parent run",
                      lambda: self.client.update_run(run_id, status="RUNNING"))

    # -- trials ----------------------------------------------------------------------------

    def find_trial(self, parent_id: str, trial_id: str) -> str | None:
        """The child run of a trial once it is complete (terminated); None while there is
        none or only a half-made (RUNNING) one, which ``log_trial`` replaces."""
        runs = self._tries()(f"looking up trial {trial_id}", lambda: self._trial_runs(parent_id, trial_id))
        return _first_terminated(runs)

    def log_trial(self, parent_id: str, record: LedgerEntry, with_model: bool = False) -> str:
        """One complete child run for a finished trial (idempotent by ``trial_id``).

        A terminated child of the trial is returned as it is; a half-made one is deleted and
        the trial logged again. Params are the config's dotted keys plus ``shape.*``, the
        shape actually built (with ``model.params`` set, the ``model.d_model`` etc. entries are
        not what ran).
        """
        trial_id = record.trial_id
        what = f"trial {trial_id}"
        tries = self._tries()
        runs = tries(f"looking up {what}", lambda: self._trial_runs(parent_id, trial_id))
        done = _first_terminated(runs)
        if done is not None:
            return done
        for run in runs:
            log.info("deleting half-made run %s of %s (status %s)", run.info.run_id, what, run.info.status)
            self._delete(tries, run.info.run_id, what)
        # The run is created when the trial has finished: date it from when the trial began.
        now = _now_ms()
        started_ms = now - int(1000 * float(record.result.get("wall_s") or 0.0))
        run_id = self._create_run(tries, f"the run of {what}", record.name, _trial_tags(parent_id, record),
                                  started_ms, lambda: self._trial_runs(parent_id, trial_id))
        try:
            self._fill_trial_run(tries, run_id, record, now, with_model)
        except TrackingRejected:
            self._discard(run_id, what)  # it can never be completed: leave no half-made run
            raise
        return run_id

    def _fill_trial_run(self, tries: Tries, run_id: str, record: LedgerEntry, now: int,
                        with_model: bool) -> None:
        """Params, metrics, curve and model of a trial's new run; terminating it comes last:
        from then on the run counts as logged."""
        what, status, result = f"trial {record.trial_id}", record.status, record.result
        shape = {f"shape.{k}": v for k, v in result.get("shape", {}).items()}
        send_items(self.client, tries, run_id, _params({**record.params, **shape}), f"the params of {what}")
        faults.kill_at("mid_mlflow")
        if status in (OK, PRUNED):
            final = metrics.final_metrics(result)
        else:  # cost is still known; no accuracy is ever logged for a failed trial
            final = {k: float(result[k]) for k in ("train_flops", "tokens", "params", "wall_s")}
        send_items(self.client, tries, run_id, _metrics(final, now), f"the metrics of {what}")
        send_items(self.client, tries, run_id, _curve(result.get("curve", []), now),
                   f"the learning curve of {what}")
        if with_model and record.model_dir:
            self._log_model(tries, run_id, record.model_dir, what)
        tries(f"finishing the run of {what}", lambda: self.client.set_terminated(
            run_id, "FINISHED" if status in (OK, PRUNED) else "FAILED"))

    def remove_strays(self, parent_id: str, logged: Mapping[str, str]) -> int:
        """Delete every child run of the search that is not the one the ledger logged its
        trial to (``logged``: trial_id -> run id). A create that a slow server committed after
        the client had given up on it leaves such a twin; the ledger says which run counts.
        Returns how many were deleted."""
        tries = self._tries()
        keep = set(logged.values())
        runs = all_pages(lambda token: tries("listing the search's runs", lambda: self.client.search_runs(
            [self.experiment_id], filter_string=tag_is(PARENT, parent_id), max_results=PAGE_SIZE,
            page_token=token)))
        strays = [r for r in runs if r.info.run_id not in keep]
        for run in strays:
            trial = run.data.tags.get(TRIAL_ID, "?")
            log.info("deleting run %s: not the ledger's run of trial %s", run.info.run_id, trial)
            self._delete(tries, run.info.run_id, f"trial {trial}")
        return len(strays)

    def restore_trials(self, parent_id: str, logged: Mapping[str, str]) -> set[str]:
        """The ledger's runs (``logged``: trial_id -> run id) deleted in MLflow since are
        restored; returns the trials whose run is gone for good (purged, or refused), which
        ``log_trial`` then logs again."""
        from mlflow.entities import ViewType

        tries = self._tries()
        runs = all_pages(lambda token: tries("listing the search's runs", lambda: self.client.search_runs(
            [self.experiment_id], filter_string=tag_is(PARENT, parent_id), run_view_type=ViewType.ALL,
            max_results=PAGE_SIZE, page_token=token)))
        by_id = {r.info.run_id: r for r in runs}
        gone = set()
        for trial_id, run_id in logged.items():
            run = by_id.get(run_id)
            if run is not None and run.info.lifecycle_stage == "deleted":
                log.warning("restoring run %s of trial %s: it was deleted in MLflow", run_id, trial_id)
                try:
                    tries(f"restoring run {run_id} of trial {trial_id}", lambda r=run_id: self.client.restore_run(r))
                    continue
                except TrackingRejected as err:
                    log.warning("%s; logging trial %s again", err, trial_id)
            elif run is not None:
                continue
            else:
                log.warning("run %s of trial %s is gone from MLflow: logging the trial again", run_id, trial_id)
            gone.add(trial_id)
        return gone

    def log_model(self, run_id: str, model_dir: str) -> None:
        self._log_model(self._tries(), run_id, model_dir, f"run {run_id}")

    def _log_model(self, tries: Tries, run_id: str, model_dir: str, what: str) -> None:
        """The run's ``model``: an MLflow pyfunc (``optimix.records.serving``) that ``mlflow models
        serve`` serves and the registry takes, its ``save_pretrained`` folder inside."""
        from optimix.records import serving

        with tempfile.TemporaryDirectory() as tmp:
            local = serving.pyfunc_model(model_dir, Path(tmp) / "model")
            tries(f"uploading the model of {what}", lambda: self.client.log_artifacts(run_id, str(local), "model"))

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

    def _tries(self) -> Tries:
        return Tries(self.display_uri)

    def _experiment_id(self) -> str | None:
        found = self.client.get_experiment_by_name(self.experiment)
        return found.experiment_id if found is not None else None

    def _search_runs(self, state_dir: str) -> list[Run]:
        return list(self.client.search_runs(
            [self.experiment_id],
            filter_string=f"{tag_is(ROLE, 'search')} and {tag_is(STATE_DIR, state_dir)}",
            max_results=100,
        ))

    def _trial_runs(self, parent_id: str, trial_id: str) -> list[Run]:
        """Every non-deleted child run of the trial, complete or not."""
        return list(self.client.search_runs(
            [self.experiment_id],
            filter_string=f"{tag_is(PARENT, parent_id)} and {tag_is(TRIAL_ID, trial_id)}",
            max_results=100,
        ))

    def _create_run(self, tries: Tries, what: str, name: str, tags: Mapping[str, str],
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

    def _delete(self, tries: Tries, run_id: str, what: str) -> None:
        tries(f"deleting run {run_id} of {what}", lambda: self.client.delete_run(run_id))

    def _discard(self, run_id: str, what: str) -> None:
        """Delete a run that cannot be completed, once, without retries; say so if it fails."""
        try:
            self.client.delete_run(run_id)
        except Exception as err:  # the next log_trial of the trial deletes it
            log.warning("could not delete half-made run %s of %s: %s", run_id, what, one_line(err))


EXPERIMENT_KIND, MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"
"""MLflow 3 opens an experiment by its kind: optimix's open on their training runs, not on an
empty GenAI traces page."""


def _trial_tags(parent_id: str, record: LedgerEntry) -> dict[str, str]:
    tags = {ROLE: "trial", PARENT: parent_id, TRIAL_ID: record.trial_id, STATUS: record.status,
            PARETO: "false", PARETO_STEPS: "[]"}
    if record.error:
        tags[ERROR] = record.error[:4000]
    if record.node:
        tags[NODE] = record.node
    if record.missed is not None:  # the search has outcome constraints
        tags[MET] = "false: " + "; ".join(record.missed) if record.missed else "true"
    tags[POINT] = json.dumps(record.point)
    tags[metrics.CONFIG] = replicates.config_id(record.params)
    return tags


def _params(params: Mapping[str, Any]) -> list[Param]:
    from mlflow.entities import Param

    return [Param(k, param_value(v)) for k, v in params.items()]


def _metrics(metrics: Mapping[str, Any], now_ms: int, step: int = 0) -> list[Metric]:
    """Finite values only. Built once per call: a retry sends the same timestamps, which
    MLflow's SQL stores do not record twice."""
    from mlflow.entities import Metric

    return [Metric(k, float(v), now_ms, step) for k, v in metrics.items() if _finite(v)]


def _curve(curve: Sequence[Mapping[str, Any]], now_ms: int) -> list[Metric]:
    """Each point at the time it was measured (``now_ms`` for a result that has none)."""
    items = []
    for point in curve:
        items += _metrics(metrics.curve_values(point), int(point.get("time_ms") or now_ms), int(point["step"]))
    return items


def _started(run: Run) -> tuple[int, str]:
    return run.info.start_time or 0, run.info.run_id


def _first_terminated(runs: Iterable[Run]) -> str | None:
    """The first-started terminated run (a logged trial), if any."""
    done = [r for r in runs if r.info.status in TERMINATED]
    return min(done, key=_started).info.run_id if done else None


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _now_ms() -> int:
    return int(time.time() * 1000)
