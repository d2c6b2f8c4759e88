"""The search driver: writes each finished trial to the ledger and to MLflow, keeps the
frontier tags current, reports progress. Lives in the driver process only.

The ledger line is written in Tune's loop, when the searcher concludes a trial (before
Optuna is told); MLflow is written by one background thread, so a finished trial's slot is
refilled at once instead of after its logging. If MLflow is unreachable the search goes on:
results stay in the ledger and are logged later, at the end, or by ``--resume``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimix.core import faults, frontier, metrics, replicates
from optimix.core.budget import Budget, Plan, Proposal
from optimix.core.config import SpaceError, flatten
from optimix.core.entry import LedgerEntry
from optimix.core.metrics import GROUP_KEY
from optimix.core.space import Space
from optimix.records import tracking
from optimix.search.ledger import SearchState
from optimix.search.proposals import Proposals

log = logging.getLogger(__name__)

_RETRY_S = 30.0  # after a failed MLflow write, wait this long before the next try


@dataclass
class Progress:
    done: int = 0
    running: int = 0
    failed: int = 0
    planned: int = 0
    spent_flops: float = 0.0
    budget_flops: float | None = None
    frontier: int = 0
    best: float | None = None
    best_metric: str = ""
    since_moved: int | None = None
    """Finished trials since the frontier last moved (None while it is empty)."""
    patience: int | None = None


class Driver:
    """Everything the search does as trials finish."""

    def __init__(self, space: Space, state: SearchState, tracker: tracking.Tracker, parent_id: str,
                 budget: Budget, proposals: Proposals, progress: Callable[[Progress], None] | None):
        self.space = space
        self.state = state
        self.tracker = tracker
        self.parent_id = parent_id
        self.objectives = space.spec.objectives
        self.constraints = space.spec.constraints
        self.budget = budget  # charged here, as each ledger line is written
        self.proposals = proposals
        self.progress_fn = progress
        self._shown_frontier = -1
        self.entries: list[LedgerEntry] = []
        self.curve = space.base.search.curve_candidates
        self.membership: dict[str, tuple[bool, list[int]]] = {}  # by run id, as tagged in MLflow
        self.board = None  # the pruning board (an actor), while trials run
        self.running: dict[str, int] = {}  # Tune trial id -> models it trains (a stacked group: several)
        self.unsynced = 0
        self.sync_failed = False  # the last MLflow sync raised (trials or frontier tags)
        self.unrestored = False  # the ledger's runs could not be checked in MLflow yet
        self.last_error = ""
        self.retry_at = 0.0
        self.save_models = space.base.search.save_models
        self.since_moved = 0  # finished trials since the frontier last moved (frontier.since_moved)
        self._front_values: frozenset = frozenset()
        self.patience = space.base.search.patience
        self.stalled: int | None = None  # since_moved when search.patience stopped the proposals
        self._stalled_at = 0  # finished trials then
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.progress = Progress(planned=space.base.search.trials, budget_flops=space.base.search.budget_flops,
                                 best_metric=self.objectives[0].metric, patience=self.patience)

    @property
    def lost_flops(self) -> float:
        """FLOPs of interrupted attempts, of this and earlier runs (``Budget.lost``)."""
        return self.budget.lost

    def replay(self, entries: list[LedgerEntry]) -> None:
        """Take up the finished trials of earlier attempts: log any MLflow missed, once."""
        self.entries.extend(entries)
        self._restore_logged()
        self.since_moved = frontier.since_moved(self.entries, self.objectives, self.curve, self.constraints)
        self._front_values = frontier.front_values(self.entries, self.objectives, self.curve, self.constraints)
        self._sync()

    def _restore_logged(self) -> None:
        """A logged trial whose run was deleted in MLflow since: its run restored, or (gone for
        good) the trial logged again. Until MLflow answers, ``finish`` asks again."""
        logged = {e.trial_id: e.run_id for e in self.entries if e.run_id}
        try:
            gone = self.tracker.restore_trials(self.parent_id, logged) if logged else set()
        except tracking.TrackingError as err:
            self.unrestored, self.last_error = True, str(err)
            log.warning("could not check the search's runs in MLflow (%s); trying again at its end", err)
            return
        self.unrestored = False
        for entry in self.entries:
            if entry.trial_id in gone:
                entry.run_id = None

    # -- as trials start and end (Tune's loop) -------------------------------------------------

    def started(self, trial_id: str, models: int = 1) -> None:
        self.running[trial_id] = models
        self._report()

    def record(self, trial_id: str, proposal: Proposal, doc: dict) -> LedgerEntry:
        """The ledger entry of a finished trial, written (fsynced) before anyone else hears of it."""
        doc = _complete(doc, proposal.plan)
        status = metrics.record_status(doc["status"])
        missed = None
        if self.constraints and status == metrics.OK:
            missed = [str(c) for c in metrics.missed(self.constraints, metrics.final_metrics(doc))]
        seed = proposal.seed if proposal.seed != self.space.base.seed else None  # a replicate's
        return self._append(LedgerEntry(
            trial_id=trial_id, index=len(self.entries), name=trial_name(len(self.entries), proposal.point, seed),
            status=status, error=doc.get("error"), point=dict(proposal.point),
            params=proposal.params(), result=doc, node=doc.get("node"),
            missed=missed, model_dir=doc.get("model_dir")))  # "all": uploaded with the run; "frontier": if on it

    def record_infeasible(self, trial_id: str, point: Mapping[str, Any], reason: str) -> LedgerEntry:
        """The ledger entry of a point infeasible before it runs (``reason``: why, e.g. the
        ``SpaceError`` of a share a burst cannot carry, or a constraint its plan misses):
        never trained, no FLOPs. Its params are its config's, or the point's values when no
        config can be built."""
        doc = {"status": metrics.INFEASIBLE, "error": reason, "params": 0, "non_embedding_params": 0,
               "tokens": 0, "train_flops": 0.0, "accuracy": {}, "loss": {}, "wall_s": 0.0, "train_s": 0.0,
               "tokens_per_s": 0.0, "steps": 0, "planned_steps": 0, "curve": []}
        try:
            params = flatten(self.proposals.get(point).config.model_dump(mode="json"))
        except SpaceError:
            params = dict(point)
        entry = self._append(LedgerEntry(
            trial_id=trial_id, index=len(self.entries), name=trial_name(len(self.entries), point),
            status=metrics.INFEASIBLE, error=reason, point=dict(point), params=params, result=doc))
        self.finished(trial_id)  # to MLflow, like a trial that ran
        return entry

    def _append(self, entry: LedgerEntry) -> LedgerEntry:
        faults.kill_at("before_ledger")
        self.state.append(entry)  # the ledger first: MLflow may fail, the result is kept
        self.budget.charge(entry)
        self.entries.append(entry)
        self._count_moves()
        return entry

    def out_of_patience(self) -> bool:
        """Whether ``search.patience`` finished trials in a row did not move the frontier (the
        searcher then proposes nothing more): the first time, noted in ``stalled``."""
        if self.stalled is None and self.patience is not None and self.since_moved >= self.patience:
            self.stalled, self._stalled_at = self.since_moved, len(self.entries)
            log.info("the frontier did not move in %d trials (search.patience: %d): no more proposals",
                     self.since_moved, self.patience)
        return self.stalled is not None

    def moved_since_stalled(self) -> bool:
        """Whether a trial still running when the proposals stopped moved the frontier."""
        return self.stalled is not None and self.since_moved < self.stalled + len(self.entries) - self._stalled_at

    def _count_moves(self) -> None:
        """``since_moved`` after the latest entry: 0 if it moved the frontier, else one more
        (``frontier.since_moved``, kept one entry at a time)."""
        now = frontier.front_values(self.entries, self.objectives, self.curve, self.constraints)
        self.since_moved = 0 if now != self._front_values else self.since_moved + 1
        self._front_values = now

    def record_lost(self, trial_id: str, train_flops: float) -> None:
        """An attempt stopped before it finished (an interruption): no result, but its compute
        counts against the budget (``{"interrupted": ...}`` ledger lines)."""
        self.state.append_interrupted(trial_id, train_flops)
        self.budget.charge_lost(train_flops)

    def finished(self, trial_id: str) -> None:
        self.running.pop(trial_id, None)
        if self._thread is None:
            self._thread = threading.Thread(target=self._sync_loop, name="optimix-mlflow", daemon=True)
            self._thread.start()
        self._wake.set()
        self._report()

    # -- MLflow (the background thread) ----------------------------------------------------

    def _sync_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            self._sync()

    def _stop_sync_thread(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None

    def _sync(self, force: bool = False) -> None:
        """Log every ledger entry MLflow has not seen yet, then retag the frontier."""
        if not force and time.monotonic() < self.retry_at:
            self.unsynced = sum(e.run_id is None for e in self.entries)
            return
        try:
            for entry in list(self.entries):
                if entry.run_id is None:
                    run_id = self.tracker.log_trial(self.parent_id, entry, with_model=self.save_models == "all")
                    faults.kill_at("before_logged")
                    self.state.append_logged(entry.trial_id, run_id)
                    entry.run_id = run_id
            self._update_frontier()
        except Exception as err:  # the store is down or refused: keep training, say so
            self.sync_failed = True
            self.unsynced = sum(e.run_id is None for e in self.entries)
            self.retry_at = time.monotonic() + _RETRY_S
            self.last_error = str(err) if isinstance(err, tracking.TrackingError) else tracking.one_line(err)
            log.warning("MLflow write failed (%s); %d finished trials kept in %s", self.last_error,
                        self.unsynced, self.state.path)
            return
        self.unsynced, self.sync_failed = 0, False

    def candidates(self) -> list[frontier.Candidate]:
        return frontier.candidates(self.entries, self.objectives, self.curve, self.constraints)

    def frontier_rows(self) -> list[dict]:
        """The frontier's rows (a config's mean over its seeds, with their account:
        ``frontier.seed_fields``), tied final results one row each (``frontier.tied``)."""
        by_trial = {e.trial_id: e for e in self.entries}
        cands = self.candidates()
        pooled = frontier.pooled_spread(cands, self.objectives)
        settings = replicates.settings(self.space.base.search)
        rows = []
        for c in frontier.front(cands, self.objectives):
            e = by_trial[c.trial_id]
            seeds = [by_trial[t].params.get("seed") for t in c.trial_ids]
            account = frontier.seed_fields(c, self.objectives, pooled, seeds, replicates.overrides(e.point),
                                           settings.seeds if settings else None)
            rows.append(frontier.row(trial_id=c.trial_id, run_id=e.run_id, name=e.name,
                                     metrics=c.metrics, params=e.result["params"], point=e.point,
                                     objectives=self.objectives, final=c.final, step=c.step, steps=c.steps,
                                     trial_ids=c.trial_ids, seeds=account))
        identity = self.identity(r["trial_id"] for r in rows if r["final"])
        order = {e.trial_id: i for i, e in enumerate(self.entries)}
        return frontier.tied(rows, self.objectives, identity, order)

    def config_groups(self) -> dict[str, replicates.Group]:
        """The finished trials (not infeasible ones) by config (``replicates.config_id``)."""
        quality = next((o for o in self.objectives if o.metric not in replicates.PLANNED), self.objectives[0])
        sign = 1.0 if quality.maximize else -1.0
        groups: dict[str, list[LedgerEntry]] = {}
        for e in self.entries:
            if e.status != metrics.INFEASIBLE:
                groups.setdefault(replicates.config_id(e.params), []).append(e)
        out = {}
        for cid, members in groups.items():
            values = [e.final_metrics().get(quality.metric) for e in members if e.status == metrics.OK]
            values = [v for v in values if v is not None]
            first = members[0]
            out[cid] = replicates.Group(
                cid, first.point, frozenset(e.params.get("seed") for e in members),
                sign * sum(values) / len(values) if values else -math.inf,
                self.proposals.cost(first.point), sum(e.train_flops for e in members[1:]))
        return out

    def front_configs(self) -> set[str]:
        """The configs on the frontier: their mean final result, or a mean curve point."""
        by_trial = {e.trial_id: e for e in self.entries}
        return {replicates.config_id(by_trial[c.trial_id].params)
                for c in frontier.front(self.candidates(), self.objectives)}

    def identity(self, trial_ids) -> dict[str, str]:
        """What each trial trains (``budget.effective_key``), by trial id: ties share it."""
        by_trial = {e.trial_id: e for e in self.entries}
        return {t: self.proposals.key(by_trial[t].point) for t in trial_ids}

    def _update_frontier(self) -> None:
        """Recompute membership; retag every run whose tags are not known to match it (all
        of them after a resume, and those a failed write may have left half-done)."""
        cands = self.candidates()
        by_trial = frontier.membership(cands, self.objectives)
        current = {e.run_id: by_trial.get(e.trial_id, (False, [])) for e in self.entries if e.run_id}
        changed = {rid: on for rid, on in current.items() if self.membership.get(rid) != on}
        if changed:
            for rid in changed:  # unknown until the write succeeds
                self.membership.pop(rid, None)
            self.tracker.set_frontier_tags(changed)
            self.membership.update(changed)
            self.tracker.log_frontier(self.parent_id, self.frontier_rows())
        if self.board is not None:
            self.board.update.remote(frontier.front(cands, self.objectives))
        self.progress.frontier = len(frontier.front(cands, self.objectives))

    def finish(self) -> list[dict]:
        """Final frontier artifacts, plots and the models kept with ``save_models: frontier``."""
        from optimix.plan import plots

        self._stop_sync_thread()
        if self.unrestored:
            self._restore_logged()
        self._sync(force=True)
        if self.progress.frontier != self._shown_frontier:
            self._report()  # the last trials' effect on the frontier, synced after they were shown
        if self.unrestored:
            raise tracking.TrackingError(
                f"the runs of the search's trials could not be checked in MLflow ({self.last_error}); "
                "run again with --resume to restore or log them")
        if self.unsynced:
            raise tracking.TrackingError(
                f"{self.unsynced} finished trials are not in MLflow yet ({self.last_error}); "
                f"they are kept in {self.state.path}: run again with --resume to record them")
        if self.sync_failed:  # every trial has its run; their frontier tags are not written
            raise tracking.TrackingError(
                f"the frontier tags of the search's runs are not all written ({self.last_error}); "
                f"run again with --resume to write them")
        self.tracker.remove_strays(self.parent_id, {e.trial_id: e.run_id for e in self.entries})
        rows = self.frontier_rows()
        ok = [e for e in self.entries if e.status == metrics.OK]
        cands = self.candidates()
        curve = [c for c in frontier.front(cands, self.objectives) if not c.final]
        membership = frontier.membership(cands, self.objectives)
        prows = plots.rows_from_entries(self.entries, membership, curve, self.objectives,
                                        self.identity(e.trial_id for e in ok))
        payloads = plots.frontier_plots(prows, self.objectives) if ok else {}
        self.tracker.log_frontier(self.parent_id, rows, payloads)
        if self.save_models == "frontier":
            on = {t for r in rows if r["final"] for t in r["trial_ids"]}  # tied trials too
            for e in ok:
                if e.trial_id in on and e.model_dir and Path(e.model_dir).exists():
                    self.tracker.log_model(e.run_id, e.model_dir)
        return rows

    def spent_flops(self) -> float:
        """FLOPs of the finished trials (``Budget.spent``)."""
        return self.budget.spent

    def attach_board(self, board) -> None:
        """The pruning board (a Ray actor) the frontier is pushed to while trials run."""
        self.board = board
        board.update.remote(frontier.front(self.candidates(), self.objectives))

    def detach_board(self):
        """The board, no longer pushed to (the caller ends it)."""
        board, self.board = self.board, None
        return board

    def _report(self) -> None:
        p = self.progress
        p.done = len(self.entries)
        p.failed = sum(e.status in (metrics.FAILED, metrics.INFEASIBLE) for e in self.entries)
        p.running = sum(self.running.values())
        p.spent_flops = self.spent_flops()
        first = self.objectives[0]
        scores = [e.final_metrics().get(first.metric) for e in self.entries if e.status == metrics.OK]
        scores = [s for s in scores if s is not None]
        if scores:
            p.best = max(scores) if first.maximize else min(scores)
        p.since_moved = self.since_moved if self._front_values else None
        self._shown_frontier = p.frontier
        if self.progress_fn:
            self.progress_fn(p)


def trial_name(index: int, point: Mapping[str, Any], seed: int | None = None) -> str:
    """``trial-007 d_model=64 rare_freq=0.0149`` (and ``seed=...`` for a replicate)."""
    parts = []
    for key, value in point.items():
        short = key.rsplit(".", 1)[-1]
        parts.append(f"{short}={value:.3g}" if isinstance(value, float) else f"{short}={value}")
    if seed is not None:
        parts.append(f"seed={seed}")
    return f"trial-{index:03d} " + " ".join(parts)


def _complete(doc: dict, plan: Plan) -> dict:
    """A result document with every field a trial result has: a trial that failed before
    ``run_trial`` could say (a dead worker, an error outside training) gets its planned
    shape and no score; its FLOPs are what it is known to have trained."""
    if "params" in doc and "curve" in doc:
        return doc
    base = {"status": "failed", "params": plan.shape.params,
            "non_embedding_params": plan.shape.non_embedding_params, "tokens": 0, "train_flops": 0.0,
            "accuracy": {}, "loss": {}, "wall_s": 0.0, "train_s": 0.0, "tokens_per_s": 0.0, "steps": 0,
            "planned_steps": plan.steps, "curve": [], "error": "trial crashed"}
    return {**base, **doc}


def callback_class():
    from ray.tune import Callback

    class DriverCallback(Callback):
        """Tune's events to the driver and the searcher. An errored trial is concluded here,
        where its error's text is known (the searcher only hears that it errored)."""

        def __init__(self, driver: Driver, searcher):
            self.driver = driver
            self.searcher = searcher

        def on_trial_start(self, iteration, trials, trial, **info):
            self.driver.started(trial.trial_id, len(trial.config.get(GROUP_KEY, [None])))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.driver.finished(trial.trial_id)

        def on_trial_error(self, iteration, trials, trial, **info):
            try:
                error = str(trial.get_error()).strip().splitlines()[-1][:500]
            except Exception:  # the error file may be missing; the trial still counts
                error = "trial errored"
            self.searcher.conclude(trial.trial_id, trial.last_result, error)
            self.driver.finished(trial.trial_id)

        def __getstate__(self) -> dict:
            # Tune pickles its callbacks with the experiment (tuner.pkl); that copy is never
            # used (--resume rebuilds everything from the ledger and the journal).
            return {}

    return DriverCallback
